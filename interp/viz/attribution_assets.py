"""The attribution-graph view's CSS and script (the rules of :mod:`interp.viz.assets` hold: text
through ``textContent``, plotly labels through ``plotlyText``, no network).

The graph is one plotly figure: 8 edge traces (sign × |weight| bin, ``null`` between segments),
one node trace per kind, 2 highlight traces for a pinned node's edges. A click pins a node (its
edges drawn over the others, which dim); shift-click or a box/lasso selection picks nodes for a
supernode; groups export as circuit-tracer's ``qParams.supernodes`` JSON.
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
  const COLOR = ['#c0392b', '#2c6fbb'];  // + excites, - inhibits
  const WIDTH = [0.5, 1.1, 2.2, 4.0], ALPHA = [0.25, 0.4, 0.6, 0.8];
  ms.attribution = function (rootId) {
    const root = document.getElementById(rootId), d = ms.data(rootId + '-data');
    const N = d.nodes, E = d.edges, n = N.kind.length, webgl = !!d.webgl;
    const tokenOf = p => d.labels[p];
    const ins = N.kind.map(() => []), outs = N.kind.map(() => []);
    E.src.forEach((s, e) => { outs[s].push(e); ins[E.dst[e]].push(e); });
    function name(i) {
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
    function segments(list) {
      const x = [], y = [];
      for (const e of list) { const s = E.src[e], t = E.dst[e]; x.push(N.x[s], N.x[t], null); y.push(N.y[s], N.y[t], null); }
      return {x, y};
    }
    const byBin = [[], [], [], [], [], [], [], []];
    E.bin.forEach((b, e) => byBin[b].push(e));
    const big = E.w.reduce((m, w) => Math.max(m, Math.abs(w)), 0);
    const cuts = [0].concat(d.edge_bins, [1]);
    const traces = [], edgeTraces = [], nodeTraces = [], members = [];
    const line = webgl ? 'scattergl' : 'scatter';
    byBin.forEach((list, b) => {
      if (!list.length) return;
      const m = b % 4, s = b < 4 ? '+' : '\u2212';
      edgeTraces.push(traces.length);
      // one legend entry per sign (the last bin drawn); widths are explained beside the graph
      traces.push(Object.assign(segments(list), {type: line, mode: 'lines', hoverinfo: 'skip', opacity: ALPHA[m],
        line: {color: COLOR[b < 4 ? 0 : 1], width: WIDTH[m]}, legendgroup: s, showlegend: false,
        name: s + ' edges, |w| ' + ms.fmt(cuts[m] * big, 2) + '\u2013' + ms.fmt(cuts[m + 1] * big, 2)}));
    });
    for (const sign of ['+', '\u2212']) {
      const last = edgeTraces.filter(t => traces[t].legendgroup === sign).pop();
      if (last !== undefined) Object.assign(traces[last], {showlegend: true, name: sign === '+' ? '+ edge (excites)' : '\u2212 edge (inhibits)'});
    }
    for (let k = 0; k < 4; k++) {
      const idx = N.kind.map((_, i) => i).filter(i => N.kind[i] === k);
      if (!idx.length) continue;
      nodeTraces.push(traces.length);
      members.push(idx);
      traces.push({type: webgl ? 'scattergl' : 'scatter', mode: k === 3 ? 'markers+text' : 'markers', name: KIND[k] + ' nodes',
        x: idx.map(i => N.x[i]), y: idx.map(i => N.y[i]), customdata: idx,
        text: k === 3 ? idx.map(i => ms.plotlyText(N.label[i])) : undefined,
        textposition: idx.map((_, j) => j % 2 ? 'bottom center' : 'top center'),  // neighbours' labels apart
        hovertext: idx.map(hover), hoverinfo: 'text',
        marker: {symbol: MARK[k][0], color: MARK[k][1], size: idx.map(i => N.size[i]),
                 opacity: idx.map(() => 1), line: {color: '#111', width: idx.map(() => 0)}}});
    }
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
      yaxis: {tickvals: rows, ticktext: rows.map(r => r < 0 ? 'emb' : r === d.n_layers ? 'logit' : 'L' + r),
              range: [-1.6, d.n_layers + 0.8], showgrid: true, gridcolor: '#f2f2f2', zeroline: false},
    };
    const plot = el('div', {cls: 'ms-ag-plot'});
    const status = el('span', {cls: 'ms-muted'});
    const nameBox = el('input', {type: 'text', placeholder: 'supernode name'});
    const groupBtn = el('button', {type: 'button', text: 'group selected'});
    const exportBtn = el('button', {type: 'button', text: 'export groups (JSON)'});
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
    side.appendChild(groupList);
    side.appendChild(out);
    out.hidden = true;
    root.appendChild(el('div', {cls: 'ms-ag-bar'}, [clearBtn, nameBox, groupBtn, exportBtn, status, msg]));
    root.appendChild(el('div', {cls: 'ms-ag'}, [plot, side]));
    let pinned = null;
    const selected = new Set(), groups = [];
    function show(i) {
      detail.textContent = '';
      if (i === null) { detail.appendChild(el('p', {cls: 'ms-muted', text: 'Hover a node for its details; click to pin its edges; shift-click or box-select nodes to group them.'})); return; }
      detail.appendChild(el('h3', {text: name(i)}));
      const dl = el('dl');
      const add = (k, v) => { dl.appendChild(el('dt', {text: k})); dl.appendChild(el('dd', {text: v})); };
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
    function restyle(edges) {
      const near = new Set();
      if (pinned !== null) { near.add(pinned); for (const e of ins[pinned]) near.add(E.src[e]); for (const e of outs[pinned]) near.add(E.dst[e]); }
      const upd = {
        'marker.opacity': members.map(idx => idx.map(i => pinned === null || near.has(i) ? 1 : 0.15)),
        'marker.line.width': members.map(idx => idx.map(i => selected.has(i) ? 2 : i === pinned ? 3 : 0)),
      };
      let which = nodeTraces;
      if (edges) {  // undefined entries leave that attribute of that trace as it is
        const skip = a => a.map(() => undefined);
        which = nodeTraces.concat(edgeTraces, hi);
        upd['marker.opacity'] = upd['marker.opacity'].concat(skip(edgeTraces), skip(hi));
        upd['marker.line.width'] = upd['marker.line.width'].concat(skip(edgeTraces), skip(hi));
        upd.opacity = skip(nodeTraces).concat(edges.alpha, skip(hi));
        upd.x = skip(nodeTraces).concat(skip(edgeTraces), edges.x);
        upd.y = skip(nodeTraces).concat(skip(edgeTraces), edges.y);
      }
      return Plotly.restyle(plot, upd, which);
    }
    function pin(i) {
      if (!(i >= 0 && i < n)) return false;
      pinned = i;
      const mine = ins[i].concat(outs[i]);
      const pos = segments(mine.filter(e => E.w[e] >= 0)), neg = segments(mine.filter(e => E.w[e] < 0));
      restyle({alpha: edgeTraces.map(() => 0.06), x: [pos.x, neg.x], y: [pos.y, neg.y]});
      status.textContent = 'pinned ' + N.id[i] + ': ' + ins[i].length + ' in, ' + outs[i].length + ' out';
      show(i);
      return true;
    }
    function unpin() {
      pinned = null;
      restyle({alpha: alpha, x: [[], []], y: [[], []]});
      status.textContent = '';
      show(null);
    }
    function select(ids) {
      for (const id of ids) { const i = N.id.indexOf(id); if (i >= 0) selected.add(i); }
      restyle();
      msg.textContent = selected.size + ' selected';
    }
    function renderGroups() {
      groupList.textContent = '';
      groups.forEach((g, k) => {
        const rm = el('button', {type: 'button', text: '\u00d7', title: 'remove this group'});
        rm.addEventListener('click', () => { groups.splice(k, 1); renderGroups(); });
        groupList.appendChild(el('li', null, [el('span', {text: g[0] + ' (' + (g.length - 1) + ' nodes)', title: g.slice(1).join(' ')}), rm]));
      });
    }
    function group(label) {
      label = String(label === undefined ? nameBox.value : label).trim();
      if (!label) { msg.textContent = 'name the supernode first'; return false; }
      if (!selected.size) { msg.textContent = 'select nodes first (shift-click, or box select)'; return false; }
      groups.push([label].concat([...selected].sort((a, b) => a - b).map(i => N.id[i])));
      selected.clear(); nameBox.value = ''; msg.textContent = '';
      restyle(); renderGroups();
      return true;
    }
    function exportJSON() {
      const text = JSON.stringify({prompt: d.prompt, supernodes: groups}, null, 1);
      out.hidden = false;
      out.textContent = text;
      const a = el('a', {href: URL.createObjectURL(new Blob([text], {type: 'application/json'})), download: 'supernodes.json'});
      a.click();
      return text;
    }
    clearBtn.addEventListener('click', unpin);
    groupBtn.addEventListener('click', () => group());
    exportBtn.addEventListener('click', exportJSON);
    nameBox.addEventListener('keydown', e => { if (e.key === 'Enter') group(); });
    show(null);
    const drawn = ms.track(Plotly.newPlot(plot, traces, layout, {responsive: true, displaylogo: false}));
    drawn.then(function () {
      plot.on('plotly_click', function (ev) {
        const p = ev.points && ev.points.find(q => q.customdata !== undefined);
        if (!p) return;
        if (ev.event && ev.event.shiftKey) {
          if (selected.has(p.customdata)) selected.delete(p.customdata); else selected.add(p.customdata);
          restyle(); msg.textContent = selected.size + ' selected';
        } else pin(p.customdata);
      });
      plot.on('plotly_hover', ev => { const p = ev.points && ev.points.find(q => q.customdata !== undefined); if (p) show(p.customdata); });
      plot.on('plotly_unhover', () => show(pinned));
      plot.on('plotly_selected', ev => {
        if (!ev) return;
        for (const p of ev.points) if (p.customdata !== undefined) selected.add(p.customdata);
        restyle(); msg.textContent = selected.size + ' selected';
      });
    });
    root.mechscope = {pin: id => pin(N.id.indexOf(id)), unpin, select, group, exportJSON,
      pinned: () => pinned === null ? null : N.id[pinned], groups: () => groups.map(g => g.slice()),
      selected: () => [...selected].map(i => N.id[i]), edgeTraces: () => edgeTraces.slice(), highlight: () => hi.slice()};
  };
})(window.mechscope);
"""
