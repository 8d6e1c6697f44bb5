import { readCatalogFile } from '../modules/catalog/catalog.file';
import { runCli } from './run';

/** npm run catalog:apply -- <file.yaml|file.json>: upserts features, plans and credit packs. */
runCli(async ({ services }) => {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: npm run catalog:apply -- <catalog.yaml|catalog.json>\n');
    return 2;
  }
  const doc = await readCatalogFile(file);
  const r = await services.catalog.applyDocument(doc);
  process.stdout.write(`Applied ${r.features} feature(s), ${r.plans} plan(s), ${r.creditPacks} credit pack(s) from ${file}.\n`);
});
