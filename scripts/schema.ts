import 'reflect-metadata';
import fs from 'node:fs';
import path from 'node:path';
import { rootDir } from '../src/db/orm';
import { printedSchema } from '../src/graphql/schema';

/** npm run schema:emit writes schema.graphql from the code; --check fails when it differs. */
async function main() {
  const file = path.join(rootDir, 'schema.graphql');
  const current = await printedSchema();
  if (process.argv.includes('--check')) {
    const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (committed !== current) {
      process.stderr.write('schema.graphql is stale: run `npm run schema:emit` and commit it.\n');
      process.exit(1);
    }
    process.stdout.write('schema.graphql is current.\n');
    return;
  }
  fs.writeFileSync(file, current);
  process.stdout.write(`Wrote ${path.relative(process.cwd(), file)}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
