/** bench/results.svg: each row's median as a multiple of its scenario's baseline, against its goal. */
export interface Bar {
  label: string;
  value: number;
  /** The goal for this row: green at or under it, red over it. */
  goal: number;
}

const escapeXml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/`/g, "");

export function svg(bars: Bar[], title: string): string {
  const width = 820;
  const rowHeight = 26;
  const left = 420;
  const max = Math.max(...bars.map((b) => Math.max(b.value, b.goal)), 1);
  const scaleX = (v: number) => ((width - left - 90) * v) / max;
  const rows = bars
    .map((bar, i) => {
      const y = 40 + i * rowHeight;
      const goalX = left + scaleX(bar.goal);
      return `<text x="${left - 8}" y="${y + 15}" text-anchor="end" font-size="12">${escapeXml(bar.label)}</text>
<rect x="${left}" y="${y}" width="${scaleX(bar.value).toFixed(1)}" height="18" fill="${bar.value <= bar.goal ? "#2e7d32" : "#c62828"}"/>
<line x1="${goalX.toFixed(1)}" x2="${goalX.toFixed(1)}" y1="${y - 2}" y2="${y + 20}" stroke="#333" stroke-dasharray="3,2"/>
<text x="${left + scaleX(bar.value) + 6}" y="${y + 14}" font-size="12">${bar.value.toFixed(2)}×</text>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${70 + bars.length * rowHeight}" font-family="sans-serif">
<title>${escapeXml(title)}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>
${rows}
<text x="10" y="${60 + bars.length * rowHeight}" font-size="11">dashed line: the row's goal; green: met, red: missed</text>
</svg>
`;
}
