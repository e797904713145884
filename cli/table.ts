/**
 * Plain-text tables for the CLI's output. Internal to the `impel` command line.
 *
 * @module
 */

/** Rows (the first is the header) as left-aligned columns two spaces apart, one line each. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  "))
    .join("\n") + "\n";
}
