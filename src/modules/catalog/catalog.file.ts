import fs from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { badInput } from '../../shared/errors';
import type { CatalogDocument } from './catalog.service';

export interface CatalogFile extends CatalogDocument {
  /** `usage`: consumes made once when the demo customer is created (so the dashboard has something to explain). */
  demoCustomers?: Array<{ id: string; name?: string; plan: string; usage?: Array<{ feature: string; quantity: number; idempotencyKey: string }> }>;
}

/** Reads a catalog document (YAML or JSON, by extension; YAML is a superset of JSON anyway). */
export async function readCatalogFile(file: string): Promise<CatalogFile> {
  const text = await fs.readFile(file, 'utf8');
  let doc: unknown;
  try {
    doc = path.extname(file).toLowerCase() === '.json' ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw badInput(`${file} is not valid ${path.extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw badInput(`${file}: expected an object with features, plans, creditPacks`);
  return doc as CatalogFile;
}
