"""Draws bench/curve.csv as an SVG (no plotting library needed): throughput and CPU per
message of Postern and Postfix, by message size and by concurrent sessions."""
import csv
import math
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
W, H, PAD = 440, 260, 50
COLORS = {"postern": "#0b57d0", "postfix": "#b3261e"}


def panel(x0, y0, title, points, xlabel, ylabel, log_y):
    """points: {series: [(x label, value)]}; x positions are evenly spaced categories."""
    out = [f'<g transform="translate({x0},{y0})">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold">{title}</text>']
    labels = next(iter(points.values()))
    n = len(labels)
    values = [v for s in points.values() for _, v in s if v > 0]
    lo, hi = min(values), max(values)
    if log_y:
        lo, hi = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    else:
        lo, hi = 0, hi * 1.1

    def y(v):
        t = (math.log10(v) - lo) / (hi - lo) if log_y else (v - lo) / (hi - lo)
        return H - PAD - t * (H - 2 * PAD)

    def x(i):
        return PAD + (i + 0.5) * (W - 2 * PAD) / n

    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>')
    out.append(f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>')
    ticks = range(lo, hi + 1) if log_y else [lo + (hi - lo) * k / 4 for k in range(5)]
    for t in ticks:
        v = 10 ** t if log_y else t
        label = f"{v:g}" if v < 1e5 else f"{v:.0e}"
        out.append(f'<text x="{PAD - 4}" y="{y(v) + 4}" text-anchor="end" font-size="10">{label}</text>')
    for i, (label, _) in enumerate(labels):
        out.append(f'<text x="{x(i)}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{label}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle" font-size="11">{xlabel}</text>')
    out.append(f'<text x="12" y="{H / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 12 {H / 2})">{ylabel}</text>')
    for series, pts in points.items():
        coords = " ".join(f"{x(i)},{y(v)}" for i, (_, v) in enumerate(pts) if v > 0)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{COLORS[series]}" stroke-width="2"/>')
        for i, (_, v) in enumerate(pts):
            if v > 0:
                out.append(f'<circle cx="{x(i)}" cy="{y(v)}" r="3" fill="{COLORS[series]}"/>')
    out.append("</g>")
    return out


def size_label(b):
    b = int(b)
    return f"{b // 1_000_000} MB" if b >= 1_000_000 else f"{b // 1000} KB"


by_size = [r for r in rows if r["variable"] == "size"]
by_sessions = sorted([r for r in rows if r["variable"] == "sessions"]
                     + [r for r in rows if r["variable"] == "size" and r["size"] == "5000"],
                     key=lambda r: int(r["sessions"]))
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{2 * H + 30}" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>']
for col, (rowset, xlabel, key) in enumerate([(by_size, "message size (20 sessions)", "size"),
                                              (by_sessions, "concurrent sessions (5 KB)", "sessions")]):
    label = (lambda r: size_label(r["size"])) if key == "size" else (lambda r: r["sessions"])
    def series(field, rs=rowset, lab=label):
        return [(lab(r), float(r[field] or 0)) for r in rs]
    svg += panel(col * W, 0, "messages / s (log)", {"postern": series("postern_mps"), "postfix": series("postfix_mps")},
                 xlabel, "msgs/s", True)
    svg += panel(col * W, H, "CPU ms per message (log)", {"postern": series("postern_cpu_ms"), "postfix": series("postfix_cpu_ms")},
                 xlabel, "ms/msg", True)
svg.append(f'<text x="20" y="{2 * H + 20}" font-size="12"><tspan fill="{COLORS["postern"]}">&#9632; Postern</tspan>'
           f'  <tspan fill="{COLORS["postfix"]}">&#9632; Postfix</tspan>  (bench/curve.sh; medians; see bench/RESULTS.md)</text>')
svg.append("</svg>")
open(sys.argv[2], "w").write("\n".join(svg) + "\n")
