"""The CSS and JavaScript the views share, inlined once per page (kept here, not in .js files, so
they ship with the package without package-data). Vanilla JS, no build step, no network.

Rules the scripts keep: model and user strings go into the DOM through ``textContent`` (``el``
below) or ``title``/``dataset`` properties, never ``innerHTML``; strings shown by plotly.js, which
reads a little HTML in labels, go through ``plotlyText``.
"""

CORE_CSS = r"""
:root { --ms-fg: #1f2328; --ms-muted: #656d76; --ms-line: #d0d7de; --ms-bg2: #f6f8fa;
        --ms-accent: #0969da; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: var(--ms-fg); background: #fff; }
.ms-page { padding: 12px 20px 40px; }
.ms-title { font-size: 20px; margin: 4px 0 10px; }
.ms-toc a { margin-right: 14px; color: var(--ms-accent); text-decoration: none; }
.ms-view { margin: 18px 0 28px; }
.ms-view > h2 { font-size: 17px; margin: 0 0 8px; border-bottom: 1px solid var(--ms-line); }
.ms-figure { width: 100%; min-height: 420px; }
.ms-text { white-space: pre-wrap; max-width: 70em; }
.ms-error { color: #b42318; background: #fef3f2; border: 1px solid #fecdca; padding: 6px 10px;
            border-radius: 6px; white-space: pre-wrap; }
.ms-muted { color: var(--ms-muted); }
.ms-feature h3 { font-size: 14px; margin: 14px 0 6px; }
.ms-feature header h3 { font-size: 18px; margin: 0; }
.ms-stats { color: var(--ms-muted); margin-top: 2px; }
.ms-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 16px; }
.ms-grid2 { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 10px; }
.ms-hist { max-width: 460px; }
.ms-bar:hover { fill: #c05f00; }
.ms-ctx { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px;
          white-space: pre; overflow-x: auto; padding: 2px 0; border-bottom: 1px solid #f0f0f0; }
.ms-ctx .ms-val { display: inline-block; width: 5.5em; color: var(--ms-muted); }
.ms-tok { border-radius: 2px; }
.ms-tok.ms-focus { outline: 1.5px solid #222; }
.ms-tok.ms-na { color: #aaa; }
.ms-band { margin: 4px 0 10px; }
.ms-band-head { color: var(--ms-muted); font-size: 12.5px; }
table.ms-logits { border-collapse: collapse; width: 100%; font-size: 12.5px; }
table.ms-logits td { padding: 1px 6px; }
table.ms-logits td.ms-num { text-align: right; font-variant-numeric: tabular-nums; width: 5em; }
.ms-tokcell { font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre; }
.ms-nn a, .ms-nn span { display: inline-block; margin: 2px 8px 2px 0; padding: 1px 6px;
         border: 1px solid var(--ms-line); border-radius: 10px; font-size: 12.5px;
         color: var(--ms-fg); text-decoration: none; }
.ms-nn a:hover { border-color: var(--ms-accent); }
.ms-browser { display: grid; grid-template-columns: 300px 1fr; gap: 18px; align-items: start; }
.ms-side { position: sticky; top: 0; max-height: 100vh; display: flex; flex-direction: column; }
.ms-side input { width: 100%; box-sizing: border-box; padding: 5px 8px; margin-bottom: 4px;
                 border: 1px solid var(--ms-line); border-radius: 6px; font: inherit; }
.ms-msg { min-height: 1.3em; font-size: 12.5px; color: #b42318; }
.ms-index-wrap { overflow-y: auto; border: 1px solid var(--ms-line); border-radius: 6px; }
table.ms-index { border-collapse: collapse; width: 100%; font-size: 12.5px; }
table.ms-index th { position: sticky; top: 0; background: var(--ms-bg2); cursor: pointer;
                    text-align: right; padding: 3px 6px; user-select: none; }
table.ms-index td { text-align: right; padding: 1px 6px; font-variant-numeric: tabular-nums; }
table.ms-index tr:hover td { background: #eef4ff; cursor: pointer; }
table.ms-index tr.ms-current td { background: #dbe9ff; }
.ms-navbar { display: flex; gap: 8px; align-items: center; margin-bottom: 6px; }
.ms-navbar button { font: inherit; padding: 2px 10px; border: 1px solid var(--ms-line);
                    border-radius: 6px; background: var(--ms-bg2); cursor: pointer; }
.ms-attn-bar { display: flex; gap: 8px; align-items: center; margin-bottom: 4px; }
.ms-attn-bar select { font: inherit; }
.ms-attn-plot { width: 100%; max-width: 760px; height: 640px; }
"""

CORE_JS = r"""
window.mechscope = window.mechscope || (function () {
  'use strict';
  const cache = {}, queue = [], pending = [];
  let started = false;

  function data(id) {  // parse a <script type="application/json"> block on first use
    if (!(id in cache)) {
      const node = document.getElementById(id);
      if (!node) throw new Error('mechscope: no data block with id ' + id);
      cache[id] = JSON.parse(node.textContent);
    }
    return cache[id];
  }
  function has(id) { return id in cache || document.getElementById(id) !== null; }
  function el(tag, props, children) {  // text always through textContent
    const node = document.createElement(tag);
    if (props) for (const k in props) {
      if (k === 'text') node.textContent = props[k];
      else if (k === 'cls') node.className = props[k];
      else if (k === 'style') node.style.cssText = props[k];
      else if (k === 'data') Object.assign(node.dataset, props[k]);
      else node[k] = props[k];
    }
    if (children) for (const c of children) if (c) node.appendChild(c);
    return node;
  }
  function plotlyText(s) {  // plotly.js reads a little HTML in labels: show it as text instead
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function fmt(x, digits) {
    if (x === null || x === undefined) return 'n/a';
    if (x === 0) return '0';
    const a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
    return x.toPrecision(digits || 3);
  }
  function showToken(s) { return String(s).replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5'); }
  function fail(where, err) {
    console.error('mechscope:', err);
    if (where) where.appendChild(el('div', {cls: 'ms-error', text: 'Could not draw this view: ' + err}));
  }
  function track(p) { if (p && p.then) pending.push(p); return p; }
  function plot(divId, dataId) {
    const div = document.getElementById(divId), fig = data(dataId);
    const config = Object.assign({responsive: true, displaylogo: false}, fig.config || {});
    const drawn = track(Plotly.newPlot(div, fig.data || [], fig.layout || {}, config));
    const meta = (fig.layout || {}).meta || {};
    if (meta.mechscope_click === 'head' && drawn && drawn.then) {
      // A layer x head heatmap: a click on a cell shows that head in the page's attention views.
      drawn.then(function () {
        div.on('plotly_click', function (ev) {
          // Cells sit at integer coordinates; meta maps them to layer and head numbers.
          const p = ev.points && ev.points[0];
          const l = p && meta.layers[p.y], h = p && meta.heads[p.x];
          if (Number.isInteger(l) && Number.isInteger(h) && window.mechscope.showHead) window.mechscope.showHead(l, h);
        });
      });
    }
    return drawn;
  }
  function onReady(fn) { if (started) run(fn); else queue.push(fn); }
  function run(fn) { try { fn(); } catch (err) { fail(null, err); } }
  function start() {
    started = true;
    for (const fn of queue.splice(0)) run(fn);
    Promise.all(pending).then(function () {
      requestAnimationFrame(function () { window.mechscopeReady = performance.now(); });
    }, function (err) { console.error('mechscope:', err); window.mechscopeReady = performance.now(); });
  }
  return {data, has, el, plotlyText, fmt, showToken, fail, track, plot, onReady, start};
})();
"""

FEATURE_JS = r"""
(function (ms) {
  'use strict';
  const el = ms.el;
  // An example: [seq_id, position, focus, token ids, activations (null where not stored)].
  function context(ex, vocab, max, label) {
    const row = el('div', {cls: 'ms-ctx'});
    row.appendChild(el('span', {cls: 'ms-val', text: label !== undefined ? label : ms.fmt(ex[4][ex[2]])}));
    const ids = ex[3], acts = ex[4];
    for (let i = 0; i < ids.length; i++) {
      const tok = vocab[ids[i]] !== undefined ? vocab[ids[i]] : '#' + ids[i];
      const a = acts[i];
      const span = el('span', {cls: 'ms-tok', text: ms.showToken(tok)});
      if (a === null) { span.classList.add('ms-na'); span.title = JSON.stringify(tok) + ': not stored (BOS)'; }
      else {
        const alpha = max > 0 ? Math.min(1, Math.max(0, a / max)) : 0;
        if (alpha > 0) span.style.background = 'rgba(255, 125, 0, ' + (0.08 + 0.8 * alpha).toFixed(3) + ')';
        span.title = JSON.stringify(tok) + '  activation ' + ms.fmt(a, 4) +
          (i === ex[2] ? '  (seq ' + ex[0] + ', pos ' + ex[1] + ')' : '');
        span.dataset.act = String(a);
      }
      if (i === ex[2]) span.classList.add('ms-focus');
      row.appendChild(span);
    }
    return row;
  }
  function logitTable(rows, vocab, sign) {
    const table = el('table', {cls: 'ms-logits'});
    const big = Math.max(1e-12, ...rows.map(r => Math.abs(r[1])));
    for (const r of rows) {
      const tok = vocab[r[0]] !== undefined ? vocab[r[0]] : '#' + r[0];
      const cell = el('td', {cls: 'ms-tokcell', text: ms.showToken(tok), title: 'token id ' + r[0]});
      const a = (0.1 + 0.6 * Math.abs(r[1]) / big).toFixed(3);
      cell.style.background = sign > 0 ? 'rgba(30, 130, 255, ' + a + ')' : 'rgba(230, 50, 50, ' + a + ')';
      table.appendChild(el('tr', null, [cell, el('td', {cls: 'ms-num', text: ms.fmt(r[1], 3)})]));
    }
    return table;
  }
  // The activation histogram as plain SVG: no plotly.js, so a page of feature dashboards opens in
  // milliseconds (plotly.js alone takes about a second to start on a small machine).
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function histogram(div, f) {
    const w = f.hist.w, counts = f.hist.counts;
    const n = Math.max(counts.reduce((m, c, j) => c > 0 ? j : m, -1) + 1, 1);
    const W = 420, H = 190, L = 46, B = 34, T = 8, R = 10, pw = W - L - R, ph = H - T - B;
    const raw = Math.max(1, ...counts.slice(0, n)), rough = raw / 4, p10 = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = Math.max(1, [1, 2, 2.5, 5, 10].map(m => m * p10).find(s => s >= rough));
    const top = step * Math.ceil(raw / step);  // y axis: round ticks 0, step, 2 step ... >= max
    const root = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, width: '100%', height: H, role: 'img',
                             'font-size': '10', 'font-family': 'inherit'});
    root.appendChild(svg('title', {}, 'Histogram of the activations of latent ' + f.id));
    for (let v = 0; v <= top + 1e-9; v += step) {  // y grid and labels
      const y = T + ph - ph * v / top;
      root.appendChild(svg('line', {x1: L, x2: W - R, y1: y, y2: y, stroke: '#eee'}));
      root.appendChild(svg('text', {x: L - 4, y: y + 3, 'text-anchor': 'end', fill: '#666'}, v.toLocaleString()));
    }
    const bw = pw / n;
    for (let j = 0; j < n; j++) {
      const h = ph * counts[j] / top;
      const bar = svg('rect', {x: L + j * bw + 0.5, y: T + ph - h, width: Math.max(bw - 1, 0.5), height: h,
                               fill: '#f08c00', 'class': 'ms-bar'});
      bar.appendChild(svg('title', {}, 'activation (' + ms.fmt(j * w, 3) + ', ' + ms.fmt((j + 1) * w, 3) + ']: ' + counts[j].toLocaleString() + ' tokens'));
      root.appendChild(bar);
    }
    for (let k = 0; k <= 4; k++) {  // x labels
      const x = L + pw * k / 4;
      root.appendChild(svg('text', {x: x, y: T + ph + 13, 'text-anchor': 'middle', fill: '#666'}, ms.fmt(n * w * k / 4, 3)));
    }
    root.appendChild(svg('line', {x1: L, x2: W - R, y1: T + ph, y2: T + ph, stroke: '#999'}));
    root.appendChild(svg('text', {x: L + pw / 2, y: H - 4, 'text-anchor': 'middle', fill: '#444'}, 'activation (tokens where the latent fires)'));
    div.appendChild(root);
  }
  // Draw feature f (see interp/viz/feature_data.py for its fields) into root.
  ms.feature = function (root, f, vocab, opts) {
    opts = opts || {};
    root.textContent = '';
    root.classList.add('ms-feature');
    const pct = (100 * f.density);
    const stats = 'density ' + (f.density === 0 ? '0' : ms.fmt(pct, 3) + '%') + ' (' + f.n_active.toLocaleString() +
      ' of ' + f.n_rows.toLocaleString() + ' tokens) \u00b7 max ' + ms.fmt(f.max, 4) + ' \u00b7 mean ' + ms.fmt(f.mean, 4);
    root.appendChild(el('header', null, [
      el('h3', {text: 'Latent ' + f.id + (opts.hook ? '  \u00b7  ' + opts.hook : '')}),
      el('div', {cls: 'ms-stats', text: stats}),
    ]));
    if (f.n_active === 0) {
      root.appendChild(el('p', {cls: 'ms-muted', text: 'This latent never fired on the tokens read (a dead latent).'}));
    }
    const hist = el('div', {cls: 'ms-hist'});
    const logits = el('div');
    if (f.logits) {
      logits.appendChild(el('div', {cls: 'ms-grid2'}, [
        el('div', null, [el('div', {cls: 'ms-muted', text: 'promoted'}), logitTable(f.logits.pos, vocab, 1)]),
        el('div', null, [el('div', {cls: 'ms-muted', text: 'suppressed'}), logitTable(f.logits.neg, vocab, -1)]),
      ]));
    } else logits.appendChild(el('p', {cls: 'ms-muted', text: 'Not computed (no model was given).'}));
    root.appendChild(el('div', {cls: 'ms-grid'}, [
      el('section', null, [el('h3', {text: 'Activation density'}), hist]),
      el('section', null, [el('h3', {text: 'Logit effects (decoder direction \u00d7 W_U)'}), logits]),
    ]));
    if (f.n_active > 0) histogram(hist, f);
    else hist.appendChild(el('p', {cls: 'ms-muted', text: 'no activations'}));
    const top = el('section', null, [el('h3', {text: 'Top activations'})]);
    for (const ex of f.top) top.appendChild(context(ex, vocab, f.max));
    if (!f.top.length) top.appendChild(el('p', {cls: 'ms-muted', text: 'none'}));
    root.appendChild(top);
    if (f.bands.length) {
      const bands = el('section', null, [el('h3', {text: 'Samples by activation quantile'})]);
      for (let b = f.bands.length - 1; b >= 0; b--) {
        const band = f.bands[b];
        const box = el('div', {cls: 'ms-band'}, [el('div', {cls: 'ms-band-head',
          text: 'quantile band ' + (b + 1) + ' of ' + f.bands.length + ': activations ' +
            (b === 0 ? '[' : '(') + ms.fmt(band.lo, 3) + ', ' + ms.fmt(band.hi, 3) + ']'})]);
        for (const ex of band.ex) box.appendChild(context(ex, vocab, f.max));
        bands.appendChild(box);
      }
      root.appendChild(bands);
    }
    if (f.nn && f.nn.length) {
      const nn = el('div', {cls: 'ms-nn'});
      for (const pair of f.nn) {
        const label = '#' + pair[0] + '  cos ' + pair[1].toFixed(3);
        nn.appendChild(opts.link ? el('a', {href: opts.link(pair[0]), text: label}) : el('span', {text: label}));
      }
      root.appendChild(el('section', null, [el('h3', {text: 'Nearest latents by decoder cosine'}), nn]));
    }
  };
})(window.mechscope);
"""

BROWSER_JS = r"""
(function (ms) {
  'use strict';
  const el = ms.el;
  const COLS = [['id', 'latent'], ['density', 'density'], ['max', 'max act'], ['mean', 'mean act']];
  ms.browser = function (rootId) {
    const root = document.getElementById(rootId);
    const index = ms.data(rootId + '-index'), vocab = ms.data(rootId + '-vocab');
    const n = index.id.length, pos = new Map(index.id.map((id, i) => [id, i]));
    let order = index.id.map((_, i) => i), sortKey = 'id', desc = false, current = -1;
    const search = el('input', {type: 'search', placeholder: 'latent id (0\u2013' + (index.d_sae - 1) + '), Enter'});
    const msg = el('div', {cls: 'ms-msg'});
    const head = el('tr', null, COLS.map(c => el('th', {text: c[1], data: {key: c[0]}})));
    const body = el('tbody');
    const table = el('table', {cls: 'ms-index'}, [el('thead', null, [head]), body]);
    const prev = el('button', {text: '\u25c0 prev', type: 'button'}), next = el('button', {text: 'next \u25b6', type: 'button'});
    const where = el('span', {cls: 'ms-muted'});
    const view = el('div');
    const wrap = el('div', {cls: 'ms-index-wrap', style: 'max-height: calc(100vh - 110px)'}, [table]);
    root.appendChild(el('div', {cls: 'ms-browser'}, [
      el('aside', {cls: 'ms-side'}, [search, msg,
        el('div', {cls: 'ms-muted', style: 'font-size: 12.5px', text: n.toLocaleString() + ' latents of ' + index.d_sae.toLocaleString() + ' \u00b7 ' + index.n_rows.toLocaleString() + ' tokens \u00b7 click a column to sort'}),
        wrap]),
      el('main', null, [el('div', {cls: 'ms-navbar'}, [prev, next, where]), view]),
    ]));
    function fillIndex() {
      const frag = document.createDocumentFragment();
      for (const i of order) {
        const tr = el('tr', {data: {i: String(i)}}, [
          el('td', {text: String(index.id[i])}), el('td', {text: ms.fmt(index.density[i], 3)}),
          el('td', {text: ms.fmt(index.max[i], 3)}), el('td', {text: ms.fmt(index.mean[i], 3)})]);
        if (i === current) tr.className = 'ms-current';
        frag.appendChild(tr);
      }
      body.textContent = '';
      body.appendChild(frag);
      for (const th of head.children) th.textContent = COLS.find(c => c[0] === th.dataset.key)[1] +
        (th.dataset.key === sortKey ? (desc ? ' \u25bc' : ' \u25b2') : '');
    }
    function sortBy(key) {
      desc = key === sortKey ? !desc : key !== 'id';
      sortKey = key;
      const v = index[key];
      order.sort((a, b) => (desc ? v[b] - v[a] : v[a] - v[b]) || index.id[a] - index.id[b]);
      fillIndex();
    }
    function show(i, push) {
      current = i;
      const id = index.id[i];
      try { ms.feature(view, ms.data(rootId + '-f' + id), vocab, {hook: index.hook, link: l => '#' + rootId + '-latent-' + l}); }
      catch (err) { ms.fail(view, err); }
      const k = order.indexOf(i);
      where.textContent = 'latent ' + id + ' \u00b7 ' + (k + 1) + ' of ' + n + ' in ' + sortKey + ' order';
      for (const tr of body.querySelectorAll('tr.ms-current')) tr.className = '';
      const tr = body.children[k];
      if (tr) {  // scroll the index only, never the page
        tr.className = 'ms-current';
        const top = tr.offsetTop - wrap.offsetTop, h = wrap.clientHeight;
        if (top < wrap.scrollTop || top > wrap.scrollTop + h - tr.offsetHeight) wrap.scrollTop = top - h / 2;
      }
      msg.textContent = '';
      if (push !== false && location.hash !== '#' + rootId + '-latent-' + id) history.replaceState(null, '', '#' + rootId + '-latent-' + id);
    }
    function goto(id) {
      if (!Number.isInteger(id)) { msg.textContent = 'type a latent id: a whole number'; return false; }
      if (id < 0 || id >= index.d_sae) { msg.textContent = 'latent ' + id + ' is out of range: this SAE has latents 0\u2013' + (index.d_sae - 1); return false; }
      if (!pos.has(id)) { msg.textContent = 'latent ' + id + ' is not in this browser (it holds ' + n + ' of ' + index.d_sae + ')'; return false; }
      show(pos.get(id));
      return true;
    }
    function step(d) { const k = order.indexOf(current); if (n) show(order[(k + d + n) % n]); }
    head.addEventListener('click', e => { const k = e.target.dataset && e.target.dataset.key; if (k) { sortBy(k); if (current >= 0) show(current); } });
    body.addEventListener('click', e => { const tr = e.target.closest('tr'); if (tr) show(Number(tr.dataset.i)); });
    search.addEventListener('keydown', e => { if (e.key === 'Enter') goto(search.value.trim() === '' ? NaN : Number(search.value.trim())); });
    prev.addEventListener('click', () => step(-1));
    next.addEventListener('click', () => step(1));
    function fromHash() {
      const m = location.hash.match(new RegExp('^#' + rootId + '-latent-(\\d+)$'));
      if (m) { goto(Number(m[1])); return true; }
      return false;
    }
    window.addEventListener('hashchange', fromHash);
    fillIndex();
    if (!fromHash() && n) show(order[0], false);
    root.mechscope = {goto, sortBy, step, current: () => current < 0 ? null : index.id[current], order: () => order.map(i => index.id[i])};
  };
})(window.mechscope);
"""

ATTENTION_JS = r"""
(function (ms) {
  'use strict';
  const el = ms.el;
  ms.attention = function (rootId) {
    const root = document.getElementById(rootId), d = ms.data(rootId + '-data');
    const labels = d.tokens.map((t, i) => ms.plotlyText(ms.showToken(t)));
    const ticks = d.tokens.map((t, i) => i + ': ' + labels[i]);
    const select = el('select');
    d.heads.forEach((h, i) => select.appendChild(el('option', {value: String(i), text: 'L' + h[0] + 'H' + h[1]})));
    const plot = el('div', {cls: 'ms-attn-plot'});
    root.appendChild(el('div', {cls: 'ms-attn-bar'}, [el('span', {text: 'head'}), select,
      el('span', {cls: 'ms-muted', text: 'rows: query position \u00b7 columns: key position'})]));
    root.appendChild(plot);
    const hover = d.tokens.map((_, q) => d.tokens.map((_, k) => [labels[q], labels[k]]));
    function draw(i) {
      const h = d.heads[i];
      select.value = String(i);
      return ms.track(Plotly.react(plot, [{
        type: 'heatmap', z: d.patterns[i], colorscale: [[0, '#ffffff'], [0.25, '#9ecae1'], [1, '#08306b']], zmin: 0, zmax: 1, customdata: hover,
        hovertemplate: 'query %{y} %{customdata[0]}<br>key %{x} %{customdata[1]}<br>attention %{z:.3f}<extra></extra>',
      }], {
        title: {text: 'Attention pattern L' + h[0] + 'H' + h[1]},
        margin: {l: 120, r: 20, t: 40, b: 120},
        xaxis: {tickvals: ticks.map((_, i) => i), ticktext: ticks, tickangle: -60, side: 'bottom'},
        yaxis: {tickvals: ticks.map((_, i) => i), ticktext: ticks, autorange: 'reversed'},
      }, {responsive: true, displaylogo: false}));
    }
    function show(layer, head) {
      const i = d.heads.findIndex(h => h[0] === layer && h[1] === head);
      if (i < 0) { console.warn('mechscope: head L' + layer + 'H' + head + ' is not in this view'); return false; }
      draw(i);
      return true;
    }
    select.addEventListener('change', () => draw(Number(select.value)));
    function fromHash() {
      const m = location.hash.match(/^#attn-L(\d+)H(\d+)$/);
      if (m && show(Number(m[1]), Number(m[2]))) root.scrollIntoView();
    }
    window.addEventListener('hashchange', fromHash);
    draw(0);
    fromHash();
    root.mechscope = {show};
    (ms.attentionViews = ms.attentionViews || []).push(root);
  };
  // For circuit views: show head (layer, head) in every attention view on the page that has it.
  ms.showHead = function (layer, head) {
    return (ms.attentionViews || []).map(r => r.mechscope.show(layer, head)).some(Boolean);
  };
})(window.mechscope);
"""
