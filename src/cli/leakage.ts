import { badInput } from '../shared/errors';
import { runCli } from './run';

/**
 * npm run leakage -- --from 2026-11-01 --to 2026-12-01 [--customer acme] [--json]
 * Prints the leakage report (the same rows as the `leakageReport` query) as a table.
 * Exit code 1 when a DETECTED cause (one that should be 0) is not.
 */
function arg(name: string): string | null {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? null) : null;
}

function date(name: string, fallback: Date): Date {
  const v = arg(name);
  if (v === null) return fallback;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw badInput(`--${name} must be a date (ISO 8601), got '${v}'`);
  return d;
}

runCli(async ({ services }) => {
  const to = date('to', new Date());
  const from = date('from', new Date(to.getTime() - 30 * 86_400_000));
  const report = await services.leakage.report({ from, to, customerId: arg('customer') });
  if (process.argv.includes('--json')) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(`Leakage ${from.toISOString()} .. ${to.toISOString()}${report.customerId ? ` (customer ${report.customerId})` : ''}\n`);
    const head = ['cause', 'status', 'count', 'units', 'amount', 'currency', 'charged'];
    const body = report.rows.map((r) => [r.cause, r.status, String(r.count), r.units.toFixed(), r.amount.toFixed(), r.currency ?? '-', r.charged.toFixed()]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i !== 5 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
    process.stdout.write(`${line(head)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${body.map(line).join('\n')}\n`);
  }
  return report.rows.some((r) => r.status === 'DETECTED' && r.count > 0) ? 1 : 0;
});
