import type { CodegenConfig } from '@graphql-codegen/cli';

/** The dashboard's operations, typed from the service's committed schema.graphql (like the client's). */
const config: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: 'src/operations/*.graphql',
  generates: {
    'src/generated/graphql.ts': {
      plugins: ['typescript-operations', 'typed-document-node'],
      config: {
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
