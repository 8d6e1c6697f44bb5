import DataLoader from 'dataloader';
import type { CustomerRow } from '../modules/customers/customers.service';
import type { Services } from '../services';

/** Per-request dataloaders (never shared between requests). */
export interface Loaders {
  customer: DataLoader<string, CustomerRow | null>;
}

export function createLoaders(services: Services): Loaders {
  return {
    customer: new DataLoader(async (ids) => {
      const found = await services.customers.getMany(ids);
      return ids.map((id) => found.get(id) ?? null);
    }),
  };
}
