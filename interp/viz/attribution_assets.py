"""The attribution-graph view's CSS and script (the rules of :mod:`interp.viz.assets` hold: text
through ``textContent``, plotly labels through ``plotlyText``, no network).

The graph is one plotly figure: 8 edge traces (sign × |weight| bin, ``null`` between segments),
one node trace per kind, one for merged supernodes, 2 highlight traces for a pinned node's edges.
A click pins a node (its edges drawn over the others, which dim); shift-click or a box/lasso
selection picks nodes for a supernode, drawn merged (``mechscope.aggregateEdges``, the one
aggregation rule); groups export and import as circuit-tracer's ``qParams.supernodes`` JSON.
"""

ATTRIBUTION_CSS = r"""
.ms-ag { display: grid; grid-template-columns: minmax(0, 1fr) 400px; gap: 14px; align-items: start; }
.ms-ag-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 4px; }
.ms-ag-bar button, .ms-ag-bar input { font: inherit; padding: 2px 8px; border: 1px solid var(--ms-line);
                                      border-radius: 6px; background: var(--ms-bg2); }
.ms-ag-bar input { background: #fff; width: 11em; }
.ms-ag-side { max-height: 100vh; overflow-y: auto; border-left: 1px solid var(--ms-line); padding-left: 12px; }
.ms-ag-side dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; margin: 4px 0; font-size: 12.5px; }
.ms-ag-side dt { color: var(--ms-muted); }
.ms-ag-side dd { margin: 0; font-variant-numeric: tabular-nums; white-space: pre-wrap; }
.ms-ag-side ul.ms-ag-members { font-size: 12px; padding-left: 18px; margin: 4px 0; }
.ms-ag-groups li { font-size: 12.5px; }
.ms-ag-groups button { font-size: 11px; margin-left: 6px; }
.ms-ag pre { font-size: 11.5px; white-space: pre-wrap; word-break: break-all; background: var(--ms-bg2);
             padding: 4px 6px; max-height: 12em; overflow: auto; }
"""

ATTRIBUTION_JS = r"""
(function (ms) {
  'use strict';
  const el = ms.el;
  const KIND = ['embedding', 'feature', 'error', 'logit'];
  const MARK = [['square', '#6b7280'], ['circle', '#e8890c'], ['diamond', '#9aa3ad'], ['hexagon', '#2c6fbb']];
  const SUPER = '#8e44ad';
  const COLOR = ['#c0392b', '#2c6fbb'];  // + excites, - inhibits
  const WIDTH = [0.5, 1.1, 2.2, 4.0], ALPHA = [0.25, 0.4, 0.6, 0.8];
  const MAX_HOVER_MEMBERS = 12;

  // The drawn edges once nodes are merged: the one aggregation rule. owner[i] is the item node i
  // is drawn as (i itself, or its merged supernode's item). Edges between the same two items are
  // summed (signed); edges inside one item are dropped (inner). Drawn edges keep the order of
  // their first member edge, so with no merge they are the edges as given; of[j]: edge j's members.
  ms.aggregateEdges = function (src, dst, w, owner) {
    let K = 1;
    for (const o of owner) if (o >= K) K = o + 1;
    const at = new Map(), out = {src: [], dst: [], w: [], of: [], inner: []};
    for (let e = 0; e < src.length; e++) {
      const s = owner[src[e]], t = owner[dst[e]];
      if (s === t) { out.inner.push(e); continue; }
      let j = at.get(s * K + t);
      if (j === undefined) {
        j = out.src.length;
        at.set(s * K + t, j);
        out.src.push(s); out.dst.push(t); out.w.push(0); out.of.push([]);
      }
      out.w[j] += w[e];
      out.of[j].push(e);
    }
    return out;
  };

  ms.attribution = function (rootId) {
    const root = document.getElementById(rootId), d = ms.data(rootId + '-data');
    const N = d.nodes, E = d.edges, n = N.kind.length, webgl = !!d.webgl;
    const tokenOf = p => d.labels[p];
    const idOf = new Map(N.id.map((id, i) => [id, i]));
    const big = E.w.reduce((m, w) => Math.max(m, Math.abs(w)), 0);
    const topInfl = N.infl.reduce((m, v) => Math.max(m, v), 1e-12);
    const cuts = [0].concat(d.edge_bins, [1]);
    function binOf(w) {  // as attribution_data bins an edge: sign, then |w| / max |w| against the cuts
      const r = Math.abs(w) / (big || 1);
      return (w < 0 ? 4 : 0) + d.edge_bins.filter(c => r > c).length;
    }
    const rowName = l => l < 0 ? 'emb' : l === d.n_layers ? 'logit' : 'L' + l;
    function name(i) {
      if (i >= n) return 'supernode ' + groups[i - n].name;
      const k = N.kind[i];
      if (k === 1) return 'feature L' + N.layer[i] + ' #' + N.feature[i] + ' @ ' + N.pos[i];
      if (k === 2) return 'error L' + N.layer[i] + ' @ ' + N.pos[i];
      if (k === 0) return 'token @ ' + N.pos[i];
      return 'logit ' + N.label[i];
    }
    function hover(i) {
      const parts = [name(i), 'token ' + N.pos[i] + ': ' + tokenOf(N.pos[i])];
      if (N.act[i] !== null) parts.push('activation ' + ms.fmt(N.act[i], 4));
      parts.push('influence ' + ms.fmt(N.infl[i], 3) + ' \u00b7 edges in ' + N.n_in[i] + ' / out ' + N.n_out[i]);
      return parts.map(ms.plotlyText).join('<br>');
    }

    // Supernodes: {name, members (node indices), merged}; a node is in at most one.
    const groups = [];
    function addGroup(label, idx) {
      const mine = new Set(idx);
      for (const g of groups) g.members = g.members.filter(i => !mine.has(i));
      for (let k = groups.length - 1; k >= 0; k--) if (!groups[k].members.length || groups[k].name === label) groups.splice(k, 1);
      groups.push({name: label, members: [...mine].sort((a, b) => a - b), merged: true});
    }
    for (const [label, ...ids] of d.supernodes || []) addGroup(label, ids.map(id => idOf.get(id)));

    // The drawn graph: items 0..n-1 are nodes, n + k is supernode k (drawn when merged).
    function layoutOf() {
      const owner = N.kind.map((_, i) => i);
      groups.forEach((g, k) => { if (g.merged) for (const i of g.members) owner[i] = n + k; });
      const a = ms.aggregateEdges(E.src, E.dst, E.w, owner);
      a.owner = owner;
      // one member edge keeps its own bin; a sum is binned as an edge of that weight would be
      a.bin = a.w.map((w, j) => a.of[j].length === 1 ? E.bin[a.of[j][0]] : binOf(w));
      a.ins = []; a.outs = [];
      for (let i = 0; i < n + groups.length; i++) { a.ins.push([]); a.outs.push([]); }
      a.src.forEach((s, j) => { a.outs[s].push(j); a.ins[a.dst[j]].push(j); });
      a.nInner = groups.map(() => 0);  // per supernode: its edges among members, not drawn
      for (const e of a.inner) a.nInner[owner[E.src[e]] - n]++;
      const mean = (g, v) => g.members.reduce((s, i) => s + v[i], 0) / g.members.length;
      a.gx = groups.map(g => mean(g, N.x)); a.gy = groups.map(g => mean(g, N.y));  // where a supernode sits
      return a;
    }
    let G = layoutOf();
    const X = i => i < n ? N.x[i] : G.gx[i - n], Y = i => i < n ? N.y[i] : G.gy[i - n];
    function segments(list) {
      const x = [], y = [];
      for (const j of list) { const s = G.src[j], t = G.dst[j]; x.push(X(s), X(t), null); y.push(Y(s), Y(t), null); }
      return {x, y};
    }
    function byBin() {
      const lists = [[], [], [], [], [], [], [], []];
      G.bin.forEach((b, j) => lists[b].push(j));
      return lists;
    }
    function superHover(k) {
      const g = groups[k], m = g.members, layers = m.map(i => N.layer[i]);
      const infl = m.reduce((s, i) => s + N.infl[i], 0), item = n + k;
      const lines = [g.name, 'supernode of ' + m.length + ' nodes \u00b7 ' + rowName(Math.min(...layers)) + '\u2013' +
        rowName(Math.max(...layers)) + ' \u00b7 influence \u03a3 ' + ms.fmt(infl, 3)];
      for (const i of m.slice(0, MAX_HOVER_MEMBERS)) lines.push('  ' + name(i) + ' \u00b7 ' + N.pos[i] + ': ' + tokenOf(N.pos[i]));
      if (m.length > MAX_HOVER_MEMBERS) lines.push('  \u2026 and ' + (m.length - MAX_HOVER_MEMBERS) + ' more');
      lines.push('edges in ' + G.ins[item].length + ' / out ' + G.outs[item].length + ' (sums of member edges)');
      lines.push(G.nInner[k] + ' edges among members not drawn');
      return lines.map(ms.plotlyText).join('<br>');
    }
    function superSize(k) {
      const infl = groups[k].members.reduce((s, i) => s + N.infl[i], 0);
      return Math.min(36, 8 + 12 * Math.sqrt(Math.max(infl, 0) / topInfl));
    }
    function superPoints() {
      const ks = groups.map((_, k) => k).filter(k => groups[k].merged);
      return {x: ks.map(k => X(n + k)), y: ks.map(k => Y(n + k)), customdata: ks.map(k => n + k),
              text: ks.map(k => ms.plotlyText(groups[k].name)), hovertext: ks.map(superHover), size: ks.map(superSize)};
    }

    const traces = [], edgeTraces = [], nodeTraces = [], members = [];
    const line = webgl ? 'scattergl' : 'scatter';
    const bins0 = byBin();
    for (let b = 0; b < 8; b++) {  // all 8, empty or not, so a merge can fill any bin
      const m = b % 4, s = b < 4 ? '+' : '\u2212';
      edgeTraces.push(traces.length);
      // one legend entry per sign (the last bin drawn); widths are explained beside the graph
      traces.push(Object.assign(segments(bins0[b]), {type: line, mode: 'lines', hoverinfo: 'skip', opacity: ALPHA[m],
        line: {color: COLOR[b < 4 ? 0 : 1], width: WIDTH[m]}, legendgroup: s, showlegend: false,
        name: s + ' edges, |w| ' + ms.fmt(cuts[m] * big, 2) + '\u2013' + ms.fmt(cuts[m + 1] * big, 2)}));
    }
    for (const sign of ['+', '\u2212']) {
      const last = edgeTraces.filter(t => traces[t].legendgroup === sign && traces[t].x.length).pop();
      if (last !== undefined) Object.assign(traces[last], {showlegend: true, name: sign === '+' ? '+ edge (excites)' : '\u2212 edge (inhibits)'});
    }
    const shown = i => G.owner[i] === i;
    for (let k = 0; k < 4; k++) {
      const idx = N.kind.map((_, i) => i).filter(i => N.kind[i] === k);
      if (!idx.length) continue;
      nodeTraces.push(traces.length);
      members.push(idx);
      traces.push({type: webgl ? 'scattergl' : 'scatter', mode: k === 3 ? 'markers+text' : 'markers', name: KIND[k] + ' nodes',
        x: idx.map(i => shown(i) ? N.x[i] : null), y: idx.map(i => shown(i) ? N.y[i] : null), customdata: idx,
        text: k === 3 ? idx.map(i => ms.plotlyText(N.label[i])) : undefined,
        textposition: idx.map((_, j) => j % 2 ? 'bottom center' : 'top center'),  // neighbours' labels apart
        hovertext: idx.map(hover), hoverinfo: 'text',
        marker: {symbol: MARK[k][0], color: MARK[k][1], size: idx.map(i => N.size[i]),
                 opacity: idx.map(() => 1), line: {color: '#111', width: idx.map(() => 0)}}});
    }
    const sp0 = superPoints(), superTrace = traces.length;
    traces.push({type: 'scatter', mode: 'markers+text', name: 'supernodes', cliponaxis: false, x: sp0.x, y: sp0.y, customdata: sp0.customdata,
      text: sp0.text, textposition: 'top center', textfont: {color: SUPER, size: 12}, hovertext: sp0.hovertext, hoverinfo: 'text',
      marker: {symbol: 'circle', color: SUPER, size: sp0.size, opacity: sp0.x.map(() => 1),
               line: {color: '#111', width: sp0.x.map(() => 1)}}});
    const alpha = edgeTraces.map(t => traces[t].opacity);  // plotly restyles these objects in place
    const hi = [traces.length, traces.length + 1];
    for (const c of COLOR) traces.push({type: line, mode: 'lines', x: [], y: [], hoverinfo: 'skip', showlegend: false, line: {color: c, width: 2.5}});
    const ticks = d.labels.map((t, p) => ms.plotlyText(p + ': ' + t));
    const rows = [-1].concat(Array.from({length: d.n_layers}, (_, l) => l), [d.n_layers]);
    const layout = {
      margin: {l: 60, r: 10, t: 60, b: 110}, height: Math.min(1200, Math.max(520, 190 + 36 * rows.length)),
      hovermode: 'closest', plot_bgcolor: 'white', dragmode: 'zoom', showlegend: true,
      legend: {orientation: 'h', y: 1.02, yanchor: 'bottom', x: 0, font: {size: 10}},
      xaxis: {automargin: true, tickvals: ticks.map((_, p) => p), ticktext: ticks, tickangle: -45, range: [-0.6, d.labels.length - 0.4],
              showgrid: false, zeroline: false},
      yaxis: {tickvals: rows, ticktext: rows.map(rowName), range: [-1.6, d.n_layers + 0.8], showgrid: true, gridcolor: '#f2f2f2', zeroline: false},
    };
    const plot = el('div', {cls: 'ms-ag-plot'});
    const status = el('span', {cls: 'ms-muted'});
    const nameBox = el('input', {type: 'text', placeholder: 'supernode name'});
    const groupBtn = el('button', {type: 'button', text: 'group selected'});
    const mergeBtn = el('button', {type: 'button', text: 'expand all'});
    const exportBtn = el('button', {type: 'button', text: 'export groups (JSON)'});
    const importBtn = el('button', {type: 'button', text: 'import groups'});
    const fileBox = el('input', {type: 'file', accept: '.json,application/json', hidden: true});
    const clearBtn = el('button', {type: 'button', text: 'unpin'});
    const msg = el('span', {cls: 'ms-msg'});
    const side = el('aside', {cls: 'ms-ag-side'});
    const detail = el('div'), groupList = el('ul', {cls: 'ms-ag-groups'}), out = el('pre');
    const sc = d.scores;
    side.appendChild(el('div', {cls: 'ms-muted', text: n + ' nodes \u00b7 ' + E.src.length + ' edges \u00b7 replacement score ' +
      ms.fmt(sc.replacement, 3) + ' \u00b7 completeness ' + ms.fmt(sc.completeness, 3)}));
    side.appendChild(el('div', {cls: 'ms-muted', text: 'edge width: |weight| up to ' + d.edge_bins.map(c => ms.fmt(c * big, 2)).join(', ') +
      ', above (of max ' + ms.fmt(big, 3) + ') \u00b7 colour: sign \u00b7 node size: influence on the logits'}));
    side.appendChild(detail);
    side.appendChild(el('h3', {text: 'Supernodes'}));
    side.appendChild(el('div', {cls: 'ms-muted', text: 'A merged supernode sits at its members\u2019 mean position; ' +
      'its edge to another node is the sum of its members\u2019 edges (signed); edges among members are not drawn.'}));
    side.appendChild(groupList);
    side.appendChild(out);
    out.hidden = true;
    root.appendChild(el('div', {cls: 'ms-ag-bar'}, [clearBtn, nameBox, groupBtn, mergeBtn, exportBtn, importBtn, fileBox, status, msg]));
    root.appendChild(el('div', {cls: 'ms-ag'}, [plot, side]));
    let pinned = null;
    const selected = new Set();
    function show(i) {
      detail.textContent = '';
      if (i === null) { detail.appendChild(el('p', {cls: 'ms-muted', text: 'Hover a node for its details; click to pin its edges; shift-click or box-select nodes to group them.'})); return; }
      detail.appendChild(el('h3', {text: name(i)}));
      const dl = el('dl');
      const add = (k, v) => { dl.appendChild(el('dt', {text: k})); dl.appendChild(el('dd', {text: v})); };
      if (i >= n) {
        const k = i - n, m = groups[k].members;
        add('members', String(m.length));
        add('influence', ms.fmt(m.reduce((s, j) => s + N.infl[j], 0), 4) + ' (sum)');
        add('edges', 'in ' + G.ins[i].length + ' \u00b7 out ' + G.outs[i].length + ' (sums of member edges)');
        add('not drawn', G.nInner[k] + ' edges among members');
        detail.appendChild(dl);
        detail.appendChild(el('ul', {cls: 'ms-ag-members'}, m.map(j => el('li', {text: N.id[j] + '  ' + name(j) + ' \u00b7 ' + N.pos[j] + ': ' + tokenOf(N.pos[j])}))));
        return;
      }
      add('id', N.id[i]);
      add('token', N.pos[i] + ': ' + tokenOf(N.pos[i]) + '  ' + JSON.stringify(d.tokens[N.pos[i]]));
      if (N.act[i] !== null) add('activation', ms.fmt(N.act[i], 4));
      add('influence', ms.fmt(N.infl[i], 4));
      add('edges', 'in ' + N.n_in[i] + ' \u00b7 out ' + N.n_out[i]);
      detail.appendChild(dl);
      if (N.url[i]) detail.appendChild(el('a', {href: N.url[i], target: '_blank', text: 'open this feature\u2019s dashboard'}));
      const key = rootId + '-L' + N.layer[i] + '-f' + N.feature[i];
      if (N.rec[i] && ms.feature) {
        const box = el('div');
        detail.appendChild(box);
        try { ms.feature(box, ms.data(key), ms.data(rootId + '-L' + N.layer[i] + '-vocab'), {hook: d.hooks[N.layer[i]]}); }
        catch (err) { ms.fail(box, err); }
      }
    }
    // One restyle per interaction: each restyle redraws every trace (~0.2-0.5 s at 10k edges).
    // Only what changed gets new data: styles always, a pin's highlight edges, and after a merge
    // the x/y of the edge bins and node kinds whose points changed and the supernode trace.
    let lastPin = null;
    const same = (a, b) => a.length === b.length && a.every((v, j) => v === b[j]);
    const drawnXY = traces.map(t => [t.x, t.y]);  // the points each trace was last given
    function putXY(put, t, xy) {
      if (same(xy.x, drawnXY[t][0]) && same(xy.y, drawnXY[t][1])) return;
      put('x', t, xy.x); put('y', t, xy.y);
      drawnXY[t] = [xy.x, xy.y];
    }
    function restyle(changed) {
      const T = traces.length, upd = {};
      const put = (key, t, v) => { (upd[key] = upd[key] || new Array(T).fill(undefined))[t] = v; };
      const near = new Set();
      if (pinned !== null) { near.add(pinned); for (const j of G.ins[pinned]) near.add(G.src[j]); for (const j of G.outs[pinned]) near.add(G.dst[j]); }
      const isSel = i => i < n ? selected.has(i) : groups[i - n].members.every(m => selected.has(m));
      const style = idx => {
        return {op: idx.map(i => pinned === null || near.has(i) ? 1 : 0.15),
                lw: idx.map(i => isSel(i) ? 2 : i === pinned ? 3 : i >= n ? 1 : 0)};
      };
      nodeTraces.forEach((t, k) => { const s = style(members[k]); put('marker.opacity', t, s.op); put('marker.line.width', t, s.lw); });
      const sp = superPoints(), ss = style(sp.customdata);
      put('marker.opacity', superTrace, ss.op); put('marker.line.width', superTrace, ss.lw);
      if (changed && changed.groups) {  // new points only for the traces whose points differ
        for (const [key, v] of [['customdata', sp.customdata], ['text', sp.text], ['hovertext', sp.hovertext], ['marker.size', sp.size]]) put(key, superTrace, v);
        putXY(put, superTrace, sp);
        nodeTraces.forEach((t, k) => putXY(put, t, {x: members[k].map(i => shown(i) ? N.x[i] : null), y: members[k].map(i => shown(i) ? N.y[i] : null)}));
        byBin().forEach((list, b) => putXY(put, edgeTraces[b], segments(list)));
      }
      if (changed && (changed.pin || pinned !== lastPin)) edgeTraces.forEach((t, b) => put('opacity', t, pinned === null ? alpha[b] : 0.06));
      if (changed) {
        const mine = pinned === null ? [] : G.ins[pinned].concat(G.outs[pinned]);
        const pos = segments(mine.filter(j => G.w[j] >= 0)), neg = segments(mine.filter(j => G.w[j] < 0));
        putXY(put, hi[0], pos); putXY(put, hi[1], neg);
      }
      if (changed) lastPin = pinned;
      const which = traces.map((_, t) => t);
      return Plotly.restyle(plot, upd, which);
    }
    function pin(i) {
      if (!(i >= 0 && i < n + groups.length) || (i < n ? G.owner[i] !== i : !groups[i - n].merged)) return false;  // drawn items only
      pinned = i;
      restyle({pin: true});
      status.textContent = 'pinned ' + (i < n ? N.id[i] : groups[i - n].name) + ': ' + G.ins[i].length + ' in, ' + G.outs[i].length + ' out';
      show(i);
      return true;
    }
    function unpin() {
      pinned = null;
      restyle({pin: true});
      status.textContent = '';
      show(null);
    }
    function select(ids) {
      for (const id of ids) { const i = idOf.get(id); if (i !== undefined) selected.add(i); }
      restyle();
      msg.textContent = selected.size + ' selected';
    }
    function toggleSelect(i) {  // a supernode selects (or drops) all its members
      const idx = i < n ? [i] : groups[i - n].members;
      const on = !idx.every(j => selected.has(j));
      for (const j of idx) { if (on) selected.add(j); else selected.delete(j); }
    }
    function regroup() {  // after the groups changed: the drawn graph again, then one restyle
      const pg = pinned !== null && pinned >= n ? groupsBefore[pinned - n] : null;
      G = layoutOf();
      if (pg) pinned = groups.indexOf(pg) >= 0 && pg.merged ? n + groups.indexOf(pg) : null;
      else if (pinned !== null && G.owner[pinned] !== pinned) pinned = null;
      groupsBefore = groups.slice();
      restyle({groups: true});
      renderGroups();
      if (pinned === null) { status.textContent = ''; show(null); } else show(pinned);
      mergeBtn.textContent = groups.some(g => g.merged) ? 'expand all' : 'merge all';
    }
    let groupsBefore = groups.slice();
    const find = key => typeof key === 'number' ? key : groups.findIndex(g => g.name === key);
    function merge(key, on) {
      const k = find(key);
      if (!(k >= 0 && k < groups.length)) return false;
      groups[k].merged = on === undefined ? !groups[k].merged : !!on;
      regroup();
      return true;
    }
    function mergeAll(on) {
      on = on === undefined ? !groups.some(g => g.merged) : !!on;
      for (const g of groups) g.merged = on;
      regroup();
      return true;
    }
    function ungroup(key) {
      const k = find(key);
      if (!(k >= 0 && k < groups.length)) return false;
      groups.splice(k, 1);
      regroup();
      return true;
    }
    function renderGroups() {
      groupList.textContent = '';
      groups.forEach((g, k) => {
        const tg = el('button', {type: 'button', text: g.merged ? 'expand' : 'merge', title: g.merged ? 'draw the members separately' : 'draw the members as one node'});
        tg.addEventListener('click', () => merge(groups.indexOf(g)));
        const rm = el('button', {type: 'button', text: '\u00d7', title: 'ungroup'});
        rm.addEventListener('click', () => ungroup(groups.indexOf(g)));
        groupList.appendChild(el('li', null, [el('span', {text: g.name + ' (' + g.members.length + ' nodes)', title: g.members.map(i => N.id[i]).join(' ')}), tg, rm]));
      });
    }
    function group(label) {
      label = String(label === undefined ? nameBox.value : label).trim();
      if (!label) { msg.textContent = 'name the supernode first'; return false; }
      if (!selected.size) { msg.textContent = 'select nodes first (shift-click, or box select)'; return false; }
      if (groups.some(g => g.name === label)) { msg.textContent = 'a supernode is already named ' + label + ': pick another name'; return false; }
      addGroup(label, [...selected]);
      selected.clear(); nameBox.value = ''; msg.textContent = '';
      regroup();
      return true;
    }
    function importGroups(obj) {
      try { if (typeof obj === 'string') obj = JSON.parse(obj); }
      catch (err) { msg.textContent = 'not JSON: ' + err.message; return false; }
      const list = Array.isArray(obj) ? obj : obj && (obj.supernodes || (obj.qParams && obj.qParams.supernodes));
      const shape = ' expected [[name, node_id, ...], ...], as {"supernodes": ...} or a viewer JSON\u2019s qParams.supernodes';
      if (!Array.isArray(list)) { msg.textContent = 'no supernodes found:' + shape; return false; }
      const bad = list.find(g => !Array.isArray(g) || g.length < 2 || typeof g[0] !== 'string' || !g[0].trim());
      if (bad !== undefined) { msg.textContent = 'a supernode ' + JSON.stringify(bad).slice(0, 60) + ' is not [name, node_id, ...]:' + shape; return false; }
      const missing = [], added = [];
      for (const [label, ...ids] of list) {
        const idx = ids.filter(id => idOf.has(String(id)) || !missing.push(id)).map(id => idOf.get(String(id)));
        if (idx.length) { addGroup(label.trim(), idx); added.push(label); }
      }
      regroup();
      msg.textContent = 'imported ' + added.length + (added.length === 1 ? ' supernode' : ' supernodes') + (missing.length ? '; ' + missing.length +
        ' node ids not in this graph skipped: ' + missing.slice(0, 5).join(', ') + (missing.length > 5 ? ', \u2026' : '') : '');
      return added.length;
    }
    function exportJSON() {
      const text = JSON.stringify({prompt: d.prompt, supernodes: groups.map(g => [g.name].concat(g.members.map(i => N.id[i])))}, null, 1);
      out.hidden = false;
      out.textContent = text;
      const a = el('a', {href: URL.createObjectURL(new Blob([text], {type: 'application/json'})), download: 'supernodes.json'});
      a.click();
      return text;
    }
    function drawn() {  // the drawn edges, named by node id or supernode name, with their bins
      const key = i => i < n ? N.id[i] : groups[i - n].name;
      return {supernodes: groups.filter(g => g.merged).map(g => g.name),
              edges: G.src.map((s, j) => [key(s), key(G.dst[j]), G.w[j], G.bin[j]])};
    }
    clearBtn.addEventListener('click', unpin);
    groupBtn.addEventListener('click', () => group());
    mergeBtn.addEventListener('click', () => mergeAll());
    exportBtn.addEventListener('click', exportJSON);
    importBtn.addEventListener('click', () => fileBox.click());
    fileBox.addEventListener('change', () => { const f = fileBox.files[0]; if (f) f.text().then(importGroups); fileBox.value = ''; });
    nameBox.addEventListener('keydown', e => { if (e.key === 'Enter') group(); });
    show(null);
    renderGroups();
    mergeBtn.textContent = groups.some(g => g.merged) ? 'expand all' : 'merge all';
    const ready = ms.track(Plotly.newPlot(plot, traces, layout, {responsive: true, displaylogo: false}));
    ready.then(function () {
      plot.on('plotly_click', function (ev) {
        const p = ev.points && ev.points.find(q => q.customdata !== undefined);
        if (!p) return;
        if (ev.event && ev.event.shiftKey) {
          toggleSelect(p.customdata);
          restyle(); msg.textContent = selected.size + ' selected';
        } else pin(p.customdata);
      });
      plot.on('plotly_hover', ev => { const p = ev.points && ev.points.find(q => q.customdata !== undefined); if (p) show(p.customdata); });
      plot.on('plotly_unhover', () => show(pinned));
      plot.on('plotly_selected', ev => {
        if (!ev) return;
        for (const p of ev.points) if (p.customdata !== undefined) for (const j of p.customdata < n ? [p.customdata] : groups[p.customdata - n].members) selected.add(j);
        restyle(); msg.textContent = selected.size + ' selected';
      });
    });
    const itemOf = key => { const k = groups.findIndex(g => g.name === key); return idOf.has(key) ? idOf.get(key) : k < 0 ? -1 : n + k; };
    root.mechscope = {pin: key => pin(itemOf(key)), unpin, select, group, merge, mergeAll, ungroup, importGroups, exportJSON, drawn,
      pinned: () => pinned === null ? null : pinned < n ? N.id[pinned] : groups[pinned - n].name,
      groups: () => groups.map(g => [g.name].concat(g.members.map(i => N.id[i]))),
      selected: () => [...selected].map(i => N.id[i]), edgeTraces: () => edgeTraces.slice(), highlight: () => hi.slice(),
      nodeTraces: () => nodeTraces.slice(), superTrace: () => superTrace};
  };
})(window.mechscope);
"""
