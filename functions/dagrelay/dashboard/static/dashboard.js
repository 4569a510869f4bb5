/* dagrelay dashboard: draws the task graph with ELK (elk.bundled.js, loaded before this file),
 * collapses groups of tasks, and keeps a running batch's page live by polling the JSON API.
 * Everything comes from this page's own origin; nothing is fetched from anywhere else. */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var TASK_W = 196, TASK_H = 46, GROUP_W = 216, GROUP_H = 58, PER_SUBLAYER = 10, MAX_SPLIT = 8;
  var SEVERITY = ["ERROR", "UPSTREAM_FAILED", "RETRY", "PROCESSING", "QUEUED", "NEW", "PENDING",
    "CANCELLED", "SKIPPED", "SUCCESS", "none"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, cls, x, y, content) {
    var t = el("text", { "class": cls, x: x, y: y }, parent);
    t.textContent = content;
    return t;
  }

  function shorten(name, chars) {
    return name.length <= chars ? name : name.slice(0, chars - 1) + "\u2026";
  }

  function worst(statuses) {
    var best = SEVERITY.length - 1;
    statuses.forEach(function (s) {
      var i = SEVERITY.indexOf(s);
      if (i >= 0 && i < best) best = i;
    });
    return SEVERITY[best];
  }

  /* -- which boxes to draw ------------------------------------------------------------------ */

  function groupKey(data, i, mode) {
    if (mode === "prefix") return data.prefix[i] === null ? null : "p:" + data.prefix[i];
    if (mode === "level") return "l:" + data.level[i];
    return null;
  }

  function visible(data, mode, expanded) {
    var members = {}, owner = [], boxes = {}, order = [];
    data.names.forEach(function (_, i) {
      var key = groupKey(data, i, mode);
      if (key !== null) (members[key] = members[key] || []).push(i);
    });
    data.names.forEach(function (name, i) {
      var key = groupKey(data, i, mode);
      var grouped = key !== null && members[key].length > 1 && !expanded[key];
      var id = grouped ? key : "t:" + name;
      owner[i] = id;
      if (!boxes[id]) {
        boxes[id] = grouped
          ? { id: id, group: key, label: key.slice(2), members: members[key], level: data.level[i] }
          : { id: id, task: i, level: data.level[i] };
        order.push(id);
      }
      boxes[id].level = Math.min(boxes[id].level, data.level[i]);
    });
    var seen = {}, edges = [];
    data.edges.forEach(function (pair) {
      var a = owner[pair[0]], b = owner[pair[1]], key = a + "\u0000" + b;
      if (a === b || seen[key]) { if (seen[key]) seen[key].n += 1; return; }
      seen[key] = { id: "e" + edges.length, source: a, target: b, n: 1,
        parent: data.names[pair[0]], child: data.names[pair[1]] };
      edges.push(seen[key]);
    });
    return { boxes: order.map(function (id) { return boxes[id]; }), edges: edges,
      groups: members, items: data.items };
  }

  function elkGraph(view) {
    var perLevel = {};
    view.boxes.forEach(function (b) { perLevel[b.level] = (perLevel[b.level] || 0) + 1; });
    var children = view.boxes.map(function (b) {
      var wide = b.group || (view.items && view.items[b.task]);  /* a group, or a mapped task */
      var node = { id: b.id, width: wide ? GROUP_W : TASK_W, height: b.group ? GROUP_H : TASK_H };
      /* a wide level is unzipped into sub-layers; every other level keeps one (the lowest
       * value set in a layer wins, and ELK's default is two) */
      var split = Math.min(MAX_SPLIT, Math.ceil(perLevel[b.level] / PER_SUBLAYER));
      node.layoutOptions = { "elk.layered.layerUnzipping.layerSplit": String(Math.max(split, 1)) };
      return node;
    });
    return {
      id: "root",
      layoutOptions: {
        "elk.algorithm": "layered",
        "elk.direction": "RIGHT",
        "elk.edgeRouting": "ORTHOGONAL",
        "elk.layered.layerUnzipping.strategy": "ALTERNATING",
        "elk.layered.spacing.nodeNodeBetweenLayers": "56",
        "elk.layered.spacing.edgeNodeBetweenLayers": "18",
        "elk.spacing.nodeNode": "20",
        "elk.spacing.edgeNode": "14",
        "elk.spacing.edgeEdge": "8",
        "elk.layered.layering.strategy": "LONGEST_PATH_SOURCE",
        "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
        "elk.layered.mergeEdges": "true",
        "elk.padding": "[top=16,left=16,bottom=16,right=16]"
      },
      children: children,
      edges: view.edges.map(function (e) {
        return { id: e.id, sources: [e.source], targets: [e.target] };
      })
    };
  }

  /* -- drawing ---------------------------------------------------------------------------- */

  function drawEdge(svg, edge, laid) {
    (laid.sections || []).forEach(function (s) {
      var points = [s.startPoint].concat(s.bendPoints || [], [s.endPoint]);
      var d = points.map(function (p, i) { return (i ? "L" : "M") + p.x + "," + p.y; }).join(" ");
      el("path", { "class": "edge" + (edge.n > 1 ? " bundle" : ""), d: d,
        "data-source": edge.source, "data-target": edge.target,
        "data-parent": edge.parent, "data-child": edge.child }, svg);
    });
  }

  function drawTask(svg, data, box, pos, causes) {
    var name = data.names[box.task], status = data.status[box.task];
    var cause = causes[box.task] === true;
    var parent = svg;
    if (data.task_url) {
      parent = el("a", { href: data.task_url.replace("{task}", encodeURIComponent(name)) }, svg);
    }
    var g = el("g", { id: "node-" + name, "class": "node status-" + status +
      (cause ? " root-cause" : ""), "data-task": name, "data-status": status }, parent);
    el("title", {}, g).textContent = name + (status === "none" ? "" : ": " + status);
    if (cause) el("rect", { "class": "halo", x: pos.x - 5, y: pos.y - 5, width: pos.width + 10,
      height: pos.height + 10, rx: 12 }, g);
    el("rect", { "class": "box", x: pos.x, y: pos.y, width: pos.width, height: pos.height, rx: 8 }, g);
    var caption = status === "none" ? "" : status + (cause ? " \u00b7 root cause" : "");
    var items = data.items && data.items[box.task];
    if (items) {  /* a mapped task: its group as one node, with its items' counts */
      g.setAttribute("class", g.getAttribute("class") + " mapped");
      g.setAttribute("data-items", [items.total, items.done, items.failed, items.running].join(" "));
      el("rect", { "class": "stack", x: pos.x + 3, y: pos.y + 3, width: pos.width - 6,
        height: pos.height - 6, rx: 6 }, g);
      caption = itemCounts(items);
      g.firstChild.textContent = name + ": " + status + ", " + caption + " (" + items.total + " items)";
      name = shorten(name, 17) + "  \u00d7" + items.total;
    }
    text(g, "name", pos.x + 12, pos.y + (caption ? 19 : pos.height / 2 + 5), shorten(name, 25));
    text(g, "state", pos.x + 12, pos.y + 36, caption);
  }

  function itemCounts(items) {
    return items.done + "/" + items.total + " done, " + items.failed + " failed, " +
      items.running + " running";
  }

  function drawGroup(svg, data, box, pos, causes, onToggle) {
    var statuses = box.members.map(function (i) { return data.status[i]; });
    var status = worst(statuses), cause = box.members.some(function (i) { return causes[i]; });
    var g = el("g", { id: "group-" + box.label, "class": "node group status-" + status +
      (cause ? " root-cause" : ""), "data-group": box.group, "data-status": status,
      tabindex: "0", role: "button" }, svg);
    el("title", {}, g).textContent = box.members.length + " tasks: " +
      box.members.map(function (i) { return data.names[i]; }).slice(0, 12).join(", ") +
      (box.members.length > 12 ? ", \u2026" : "") + " (click to expand)";
    el("rect", { "class": "box", x: pos.x, y: pos.y, width: pos.width, height: pos.height, rx: 10 }, g);
    el("rect", { "class": "stack", x: pos.x + 4, y: pos.y + 4, width: pos.width - 8,
      height: pos.height - 8, rx: 7 }, g);
    var label = box.group.charAt(0) === "l" ? "level " + box.label : box.label;
    text(g, "name", pos.x + 12, pos.y + 20, shorten(label, 20) + "  \u00d7" + box.members.length);
    drawCounts(g, statuses, pos);
    g.addEventListener("click", function () { onToggle(box.group); });
    g.addEventListener("keydown", function (e) { if (e.key === "Enter") onToggle(box.group); });
  }

  function drawCounts(g, statuses, pos) {
    if (statuses[0] === "none") return;
    var counts = {};
    statuses.forEach(function (s) { counts[s] = (counts[s] || 0) + 1; });
    var x = pos.x + 12, width = pos.width - 24;
    SEVERITY.forEach(function (s) {
      if (!counts[s]) return;
      var w = width * counts[s] / statuses.length;
      el("rect", { "class": "bar status-" + s, x: x, y: pos.y + 34, width: w, height: 10 }, g);
      x += w;
    });
  }

  function frame(holder, laid) {
    holder.textContent = "";
    var svg = el("svg", { "class": "dag", role: "img", width: Math.ceil(laid.width),
      height: Math.ceil(laid.height), viewBox: "0 0 " + Math.ceil(laid.width) + " " +
      Math.ceil(laid.height), "aria-label": holder.getAttribute("data-label") || "task graph" });
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z" }, marker);
    holder.appendChild(svg);
    return svg;
  }

  /* -- one graph on the page -------------------------------------------------------------- */

  function Graph(holder, data) {
    this.holder = holder;
    this.data = data;
    this.mode = data.mode;
    this.expanded = {};
    this.elk = new ELK();
    this.causes = {};
    var self = this;
    data.causes.forEach(function (i) { self.causes[i] = true; });
  }

  Graph.prototype.draw = function () {
    var self = this, view = visible(this.data, this.mode, this.expanded);
    var started = performance.now();
    this.holder.setAttribute("data-layout", "running");
    return this.elk.layout(elkGraph(view)).then(function (laid) {
      var svg = frame(self.holder, laid), byId = {}, edgeById = {};
      laid.children.forEach(function (c) { byId[c.id] = c; });
      view.edges.forEach(function (e) { edgeById[e.id] = e; });
      laid.edges.forEach(function (e) { drawEdge(svg, edgeById[e.id], e); });
      view.boxes.forEach(function (box) {
        if (box.group) {
          drawGroup(svg, self.data, box, byId[box.id], self.causes, function (key) {
            self.expanded[key] = true;
            self.draw();
          });
        } else {
          drawTask(svg, self.data, box, byId[box.id], self.causes);
        }
      });
      self.holder.setAttribute("data-boxes", String(view.boxes.length));
      self.holder.setAttribute("data-layout-ms", String(Math.round(performance.now() - started)));
      self.holder.setAttribute("data-layout", "done");
      performance.mark("dagrelay-layout-done");
    }).catch(function (err) {
      self.holder.setAttribute("data-layout", "failed");
      self.holder.textContent = "The graph could not be laid out: " + err;
    });
  };

  Graph.prototype.setMode = function (mode) {
    this.mode = mode;
    this.expanded = {};
    return this.draw();
  };

  Graph.prototype.update = function (statusByTask, mapGroups) {
    var changed = false, data = this.data;
    (mapGroups || []).forEach(function (m) {
      var i = data.names.indexOf(m.task), now = data.items && data.items[i];
      var next = { total: m.total, done: m.succeeded + m.failed, failed: m.failed,
        running: m.running };
      if (i >= 0 && (!now || itemCounts(now) !== itemCounts(next))) {
        data.items[i] = next;
        changed = true;
      }
    });
    data.names.forEach(function (name, i) {
      var next = statusByTask[name] || "PENDING";
      if (data.status[i] !== "none" && data.status[i] !== next) {
        data.status[i] = next;
        changed = true;
      }
    });
    if (changed) this.draw();
  };

  function setUpControls(graph) {
    var select = document.getElementById("graph-mode");
    if (!select) return;
    select.value = graph.mode;
    select.addEventListener("change", function () { graph.setMode(select.value); });
    var expand = document.getElementById("graph-expand");
    if (expand) expand.addEventListener("click", function () { graph.setMode("none"); select.value = "none"; });
  }

  /* -- live refresh of a running batch ----------------------------------------------------- */

  function poll(body, graph) {
    var url = body.getAttribute("data-poll"), shown = body.getAttribute("data-batch-status");
    var task = body.getAttribute("data-task"), taskShown = body.getAttribute("data-task-status");
    var every = Number(body.getAttribute("data-poll-ms") || "3000");
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (detail) {
          var statuses = {};
          detail.tasks.forEach(function (t) { statuses[t.task] = t.status; });
          var taskNow = task ? (statuses[task] || "PENDING") : null;
          if (detail.batch.status !== shown || (task && taskNow !== taskShown)) {
            window.location.reload();
            return;
          }
          if (graph) graph.update(statuses, detail.map_groups);
          body.setAttribute("data-polled", String(Number(body.getAttribute("data-polled") || 0) + 1));
          window.setTimeout(tick, every);
        })
        .catch(function () { window.setTimeout(tick, every * 2); });
    }
    window.setTimeout(tick, every);
  }

  function start() {
    var holder = document.getElementById("graph"), graph = null;
    var source = document.getElementById("graph-data");
    if (holder && source) {
      graph = new Graph(holder, JSON.parse(source.textContent));
      setUpControls(graph);
      graph.draw();
    }
    if (document.body.hasAttribute("data-poll")) poll(document.body, graph);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
