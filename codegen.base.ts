import type { CodegenConfig } from '@graphql-codegen/cli';

/**
 * The one GraphQL Code Generator setup of the workspaces that call the API (packages/client,
 * packages/dashboard): their `src/operations/*.graphql`, typed from the committed schema.graphql
 * into `src/generated/graphql.ts`, which is committed and checked by CI (a schema change that
 * breaks a caller shows in review). Each package's codegen.ts is this, run from its folder.
 */
export const operationsCodegen: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: 'src/operations/*.graphql',
  generates: {
    'src/generated/graphql.ts': {
      // typescript-operations (v6) writes the enums and inputs the operations use; the
      // typescript plugin would write them a second time.
      plugins: ['typescript-operations', 'typed-document-node'],
      config: {
        // Documents as strings: no graphql runtime in the callers.
        documentMode: 'string',
        enumsAsTypes: true,
        useTypeImports: true,
        avoidOptionals: { field: true, inputValue: false, object: false },
        scalars: { Decimal: { input: 'string | number', output: 'string' }, DateTime: 'string', JSON: 'unknown' },
      },
    },
  },
};
