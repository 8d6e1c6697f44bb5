import { operationsCodegen } from '../../codegen.base';

/** The client's operations (src/operations/*.graphql), typed from schema.graphql: see ../../codegen.base.ts. */
export default operationsCodegen;
