'use strict';
// jest setupFilesAfterEnv: statement capture inside each test file's module registry (see capture.js).
if (process.env.TOLLGATE_STATEMENT_LOG) {
  require('./capture').install(require('pg'), process.env.TOLLGATE_STATEMENT_LOG, 'jest');
}
