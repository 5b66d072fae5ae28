#!/usr/bin/env python3
"""plot.py CSV OUT.svg TITLE: a dependency-free SVG line chart of offered vs accepted records/s
and loss % from a capacity CSV (columns: offered_rps,accepted_rps,loss_pct,...)."""
import csv, sys

rows = list(csv.DictReader(open(sys.argv[1])))
out, title = sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "capacity"
W, H, L, R, T, B = 720, 420, 80, 70, 40, 60
xs = [float(r["offered_rps"]) for r in rows]
acc = [float(r["accepted_rps"]) for r in rows]
loss = [float(r["loss_pct"]) for r in rows]
xmax = max(xs + acc + [1]) * 1.05
lmax = max(loss + [1]) * 1.1
def X(v): return L + (W - L - R) * v / xmax
def Y(v): return H - B - (H - T - B) * v / xmax
def YL(v): return H - B - (H - T - B) * v / lmax
def path(pts): return " ".join(("M" if i == 0 else "L") + f"{x:.1f},{y:.1f}" for i, (x, y) in enumerate(pts))
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="#c33"/>']
for i in range(6):
    v = xmax * i / 5
    svg.append(f'<text x="{X(v):.0f}" y="{H-B+18}" text-anchor="middle">{v/1e6:.1f}M</text>')
    svg.append(f'<text x="{L-6}" y="{Y(v)+4:.0f}" text-anchor="end">{v/1e6:.1f}M</text>')
    svg.append(f'<text x="{W-R+6}" y="{YL(lmax*i/5)+4:.0f}" fill="#c33">{lmax*i/5:.2f}%</text>')
svg.append(f'<text x="{(L+W-R)/2}" y="{H-15}" text-anchor="middle">offered records/s</text>')
svg.append(f'<path d="{path([(X(0),Y(0)),(X(xmax),Y(xmax))])}" stroke="#bbb" stroke-dasharray="4 4" fill="none"/>')
svg.append(f'<path d="{path([(X(x),Y(a)) for x,a in zip(xs,acc)])}" stroke="#25a" stroke-width="2" fill="none"/>')
svg.append(f'<path d="{path([(X(x),YL(l)) for x,l in zip(xs,loss)])}" stroke="#c33" stroke-width="2" fill="none"/>')
for x, a, l in zip(xs, acc, loss):
    svg.append(f'<circle cx="{X(x):.1f}" cy="{Y(a):.1f}" r="3" fill="#25a"/><circle cx="{X(x):.1f}" cy="{YL(l):.1f}" r="3" fill="#c33"/>')
svg.append(f'<text x="{L+10}" y="{T+14}" fill="#25a">accepted records/s (left)</text>')
svg.append(f'<text x="{L+10}" y="{T+30}" fill="#c33">loss % (right)</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg))
