/** Types for capture.js (plain JavaScript: it is also preloaded into `node dist/src/main.js`). */
export declare const TEST_APPLICATION_NAME: string;
export declare function install(pg: unknown, dir: string, proc: 'jest' | 'service'): void;
