import { runCli } from './run';

/** npm run verify: recomputes every balance from the ledger; exit code 1 when anything differs. */
runCli(async ({ services }) => {
  const diffs = await services.ledger.verify(process.argv[2] ?? null);
  if (diffs.length === 0) {
    process.stdout.write('Ledger verified: every balance equals the sum of its entries.\n');
    return 0;
  }
  process.stdout.write(`${diffs.length} difference(s):\n`);
  for (const d of diffs) process.stdout.write(`  ${d.customerId}\t${d.grantId}\t${d.field}\tmaterialized=${d.materialized}\tledger=${d.fromLedger}\n`);
  return 1;
});
