"""Operating dagrelay: the pure decisions of operator verbs, and the function archive."""
