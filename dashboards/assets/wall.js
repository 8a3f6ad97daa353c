/* The wall's map, drawn in the browser from a compact frame (dashboards/figures.py map_frame):
   the server sends each link's colour class as one character and packed numbers; the links' end
   points arrived once with the page. apply_frame in figures.py is the same in Python.
   With map tiles (dashboards/tiles.py) the figure's meta says where they come from, and the map
   shows the tiles of the view the user pans and zooms to; without, nothing here asks for any. */
(function () {
    const WORLD = 2 * Math.PI * 6378137, TILE_PX = 256, MAX_TILES = 400;
    const shown = {key: null, images: null};     // the tiles the map shows now (kept across frames)

    // tiles.py tile_layer: the tiles covering a view (web mercator metres) at the zoom that shows
    // them closest to their own size, as layout images under the traces
    function tileLayer(xr, yr, widthPx, template, maxZoom) {
        const x0 = Math.min(xr[0], xr[1]), x1 = Math.max(xr[0], xr[1]);
        const y0 = Math.min(yr[0], yr[1]), y1 = Math.max(yr[0], yr[1]);
        const span = Math.max(x1 - x0, 1e-3);
        let z = Math.min(Math.max(Math.round(Math.log2(Math.max(widthPx, 1) * WORLD / (TILE_PX * span))), 0), maxZoom);
        let size, tx0, tx1, ty0, ty1;
        for (;;) {
            size = WORLD / Math.pow(2, z);
            const n = Math.pow(2, z), clamp = (v) => Math.min(Math.max(Math.floor(v), 0), n - 1);
            tx0 = clamp((x0 + WORLD / 2) / size); tx1 = clamp((x1 + WORLD / 2) / size);
            ty0 = clamp((WORLD / 2 - y1) / size); ty1 = clamp((WORLD / 2 - y0) / size);
            if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) <= MAX_TILES || z === 0) { break; }
            z -= 1;
        }
        const images = [];
        for (let ty = ty0; ty <= ty1; ty++) {
            for (let tx = tx0; tx <= tx1; tx++) {
                images.push({source: template.replace("{z}", z).replace("{x}", tx).replace("{y}", ty),
                             xref: "x", yref: "y", x: -WORLD / 2 + tx * size, y: WORLD / 2 - ty * size,
                             sizex: size, sizey: size, xanchor: "left", yanchor: "top", sizing: "stretch",
                             layer: "below"});
            }
        }
        return {key: z + ":" + tx0 + "-" + tx1 + ":" + ty0 + "-" + ty1, images: images};
    }

    // the first frame: the tiles of the network's bounds as this graph will show them (equal
    // scales widen one axis around its centre), so the browser does not first fetch the server's
    // guess at the page's size
    function firstTiles(gd, layout, tiles) {
        const fl = gd._fullLayout, mg = layout.margin || {}, b = tiles.bounds, xr = [b[0], b[1]], yr = [b[2], b[3]];
        const w = fl.width - (mg.l || 0) - (mg.r || 0), h = (layout.height || fl.height) - (mg.t || 0) - (mg.b || 0);
        if (!(w > 0) || !(h > 0)) { return; }
        const k = Math.min(w / (xr[1] - xr[0]), h / (yr[1] - yr[0]));       // pixels per metre
        const cx = (xr[0] + xr[1]) / 2, cy = (yr[0] + yr[1]) / 2;
        const layer = tileLayer([cx - w / k / 2, cx + w / k / 2], [cy - h / k / 2, cy + h / k / 2], w,
                                tiles.template, tiles.max_zoom);
        shown.key = layer.key;
        shown.images = layer.images;
    }

    // after every drawing (a new frame, a pan, a zoom, a resize): the view's tiles, if they changed
    function followTiles(gd, tiles) {
        gd._pipetwinTiles = tiles;
        if (gd._pipetwinFollows || !gd.on) { return; }
        gd._pipetwinFollows = true;
        gd.on("plotly_afterplot", function () {
            const t = gd._pipetwinTiles, fl = gd._fullLayout;
            if (!t || !fl || !fl.xaxis || !fl._size) { return; }
            const layer = tileLayer(fl.xaxis.range, fl.yaxis.range, fl._size.w, t.template, t.max_zoom);
            if (layer.key === shown.key) { return; }
            shown.key = layer.key;
            shown.images = layer.images;
            window.Plotly.relayout(gd, {images: layer.images});
        });
    }

    function unpack(p) {
        if (!p) { return null; }
        const bin = atob(p.b);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
        const q = new Int16Array(bytes.buffer);
        const out = new Array(q.length);
        for (let i = 0; i < q.length; i++) { out[i] = q[i] === -32768 ? null : p.o + q[i] * p.s; }
        return out;
    }

    function draw(frame, base, geo) {
        const no = window.dash_clientside.no_update;
        if (!frame || !base || !geo) { return [no, no, no]; }
        const m = base.meta;
        const data = base.data.slice();
        const xs = [], ys = [];
        for (let k = 0; k <= m.classes; k++) { xs.push([]); ys.push([]); }
        const cls = frame.cls;
        for (let i = 0; i < cls.length; i++) {
            const c = cls.charCodeAt(i), k = c - 48;
            if (i > 0 && cls.charCodeAt(i - 1) === c && geo.x1[i - 1] === geo.x0[i] && geo.y1[i - 1] === geo.y0[i]) {
                xs[k].push(geo.x1[i]);             // continues the previous link's line
                ys[k].push(geo.y1[i]);
                continue;
            }
            if (xs[k].length) { xs[k].push(null); ys[k].push(null); }
            xs[k].push(geo.x0[i], geo.x1[i]);
            ys[k].push(geo.y0[i], geo.y1[i]);
        }
        for (let k = 0; k <= m.classes; k++) {
            data[m.pipes + k] = Object.assign({}, base.data[m.pipes + k], {x: xs[k], y: ys[k]});
        }
        const nodes = base.data[m.nodes];
        const colorbar = Object.assign({}, nodes.marker.colorbar, {title: {text: "pressure<br>" + frame.unit}});
        data[m.nodes] = Object.assign({}, nodes, {marker: Object.assign({}, nodes.marker,
            {color: unpack(frame.nodes), colorbar: colorbar})});
        if (frame.contour) {
            const z = unpack(frame.contour), nx = frame.gx.length, rows = [];
            for (let i = 0; i < z.length; i += nx) { rows.push(z.slice(i, i + nx)); }
            data[m.contour] = Object.assign({}, base.data[m.contour], {x: frame.gx, y: frame.gy, z: rows, visible: true});
        } else {
            data[m.contour] = Object.assign({}, base.data[m.contour], {visible: false});
        }
        const s = frame.sensors, sensors = base.data[m.sensors];
        data[m.sensors] = Object.assign({}, sensors, {x: s.x, y: s.y, text: s.text, customdata: s.customdata,
            marker: Object.assign({}, sensors.marker, {color: s.color})});
        let layout = base.layout;
        const gd = document.querySelector("#wall-map .js-plotly-plot"), fl = gd && gd._fullLayout;
        if (fl && fl.xaxis && fl.yaxis && fl.xaxis.autorange === false && fl.yaxis.autorange === false) {
            // the user's pan or zoom stays through new frames (uirevision alone lets a frame reset it)
            layout = Object.assign({}, layout, {
                xaxis: Object.assign({}, layout.xaxis, {range: fl.xaxis.range.slice(), autorange: false}),
                yaxis: Object.assign({}, layout.yaxis, {range: fl.yaxis.range.slice(), autorange: false})});
        }
        if (m.tiles) {
            if (gd) { followTiles(gd, m.tiles); }
            if (!shown.images && gd && gd._fullLayout) { firstTiles(gd, base.layout, m.tiles); }
            if (shown.images) { layout = Object.assign({}, layout, {images: shown.images}); }
        } else {
            shown.key = null;
            shown.images = null;
        }
        return [{data: data, layout: layout}, frame.stamp, String(frame.ts)];
    }

    window.dash_clientside = Object.assign({}, window.dash_clientside, {wall: {draw: draw}});
})();
