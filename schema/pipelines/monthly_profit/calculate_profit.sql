MERGE reports.monthly_profit AS t
USING (
  SELECT @batch_id AS month, s.total AS sales, e.total AS expenses, s.total - e.total AS profit
  FROM (SELECT SUM(amount) AS total FROM finance.sales
        WHERE CAST(sale_date AS STRING) LIKE CONCAT(@batch_id, '-%')) AS s,
       (SELECT SUM(amount) AS total FROM finance.expenses
        WHERE CAST(expense_date AS STRING) LIKE CONCAT(@batch_id, '-%')) AS e
) AS m
ON t.month = m.month
WHEN MATCHED THEN UPDATE SET sales = m.sales, expenses = m.expenses, profit = m.profit
WHEN NOT MATCHED THEN INSERT (month, sales, expenses, profit)
  VALUES (m.month, m.sales, m.expenses, m.profit)
