import type { CodegenConfig } from '@graphql-codegen/cli';

/**
 * The client's operations (src/operations/*.graphql), typed from the service's committed
 * schema.graphql. The generated file is committed; CI regenerates it and fails on a difference,
 * so a schema change that breaks the client shows in review.
 */
const config: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: 'src/operations/*.graphql',
  generates: {
    'src/generated/graphql.ts': {
      // typescript-operations (v6) writes the enums and inputs the operations use; the
      // typescript plugin would write them a second time.
      plugins: ['typescript-operations', 'typed-document-node'],
      config: {
        // Documents as strings: no graphql runtime in the client.
        documentMode: 'string',
        enumsAsTypes: true,
        useTypeImports: true,
        avoidOptionals: { field: true, inputValue: false, object: false },
        scalars: { Decimal: { input: 'string | number', output: 'string' }, DateTime: 'string', JSON: 'unknown' },
      },
    },
  },
};

export default config;
