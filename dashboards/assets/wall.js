/* The wall's map, drawn in the browser from a compact frame (dashboards/figures.py map_frame):
   the server sends each link's colour class as one character and packed numbers; the links' end
   points arrived once with the page. apply_frame in figures.py is the same in Python. */
(function () {
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
        return [{data: data, layout: base.layout}, frame.stamp, String(frame.ts)];
    }

    window.dash_clientside = Object.assign({}, window.dash_clientside, {wall: {draw: draw}});
})();
