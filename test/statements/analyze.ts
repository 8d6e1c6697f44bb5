/**
 * Would Citus run this statement on one shard? A static answer from PostgreSQL's own parse tree
 * (libpg-query: the PostgreSQL 18 parser compiled to WASM).
 *
 * The criterion is the one Citus's router planner applies: every distributed table the
 * statement reads or writes is restricted to one value of its distribution column, and the
 * values agree. A table is restricted when
 * - a conjunct of its WHERE / JOIN ... ON / USING says `customer_id = <param, literal or a
 *   function of them>`, or
 * - it is joined by `a.customer_id = b.customer_id` to a table that is restricted, or
 * - (INSERT) the new rows' `customer_id` comes from one value, or from a restricted table, or
 * - a correlated subquery compares its table's `customer_id` with a restricted outer table's.
 *
 * Equalities are tracked as equivalence classes (union-find) over column and value nodes, with a
 * few one-way edges where SQL only lets information flow one way: a CTE or a subquery with LIMIT
 * is evaluated before the outer query filters it, so a filter outside does not restrict it, but
 * its restricted output restricts what joins it; a correlated subquery is restricted by its outer
 * row, not the reverse. OR, NOT, `= any(array)` and `in (a, b)` restrict nothing.
 *
 * Besides routing, a few things Citus refuses whatever the routing (`blockers`) and one it
 * refuses in multi-shard statements only (`multiShardBlockers`: row locks).
 */
import { parseSync } from 'libpg-query';
import { placementOf, type Placement } from './tables';

/* eslint-disable @typescript-eslint/no-explicit-any */
type N = any;

export interface Schema {
  /** Columns of every table of the public schema, in order. */
  columns: Map<string, string[]>;
  /** Volatility ('i', 's', 'v') of every function name's overloads. */
  volatility: Map<string, Set<string>>;
}

export type StatementKind = 'control' | 'ddl' | 'dml';

export interface Analysis {
  kind: StatementKind;
  /** Tables of the public schema the statement names (DML only). */
  tables: string[];
  /** Why it is not router-executable (empty: it is, or touches no distributed table). */
  problems: string[];
  /** What Citus refuses whatever the routing. */
  blockers: string[];
  /** What Citus refuses in a multi-shard statement. */
  multiShardBlockers: string[];
  /** The distribution values it is restricted to (`$1`, a literal...). */
  values: string[];
  /** Tables whose classification is missing (test/statements/tables.ts). */
  unknownTables: string[];
}

// ---- equivalence classes ----------------------------------------------------------------------

class Classes {
  private parent = new Map<string, string>();
  private oneWay: Array<[string, string]> = [];
  private allOf: Array<{ target: string; sources: string[] }> = [];
  private solved: Map<string, Set<string>> | undefined;

  private find(x: string): string {
    let p = this.parent.get(x);
    if (p === undefined) {
      this.parent.set(x, x);
      return x;
    }
    while (p !== x) {
      const gp = this.parent.get(p)!;
      this.parent.set(x, gp);
      x = p;
      p = this.parent.get(x)!;
    }
    return x;
  }

  same(a: string, b: string): void {
    this.solved = undefined;
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.parent.set(ra, rb);
  }

  /** Values that restrict `from` restrict `to` (not the reverse). */
  flows(from: string, to: string): void {
    this.solved = undefined;
    this.oneWay.push([from, to]);
  }

  /** `target` is restricted when every source is restricted to the same value (set operations). */
  flowsWhenAll(target: string, sources: string[]): void {
    this.solved = undefined;
    this.allOf.push({ target, sources });
  }

  valuesOf(node: string): Set<string> {
    if (!this.solved) this.solve();
    return this.solved!.get(this.find(node)) ?? new Set();
  }

  private solve(): void {
    const vals = new Map<string, Set<string>>();
    const add = (root: string, v: Iterable<string>): boolean => {
      let set = vals.get(root);
      if (!set) vals.set(root, (set = new Set()));
      let changed = false;
      for (const x of v) if (!set.has(x)) (set.add(x), (changed = true));
      return changed;
    };
    for (const node of [...this.parent.keys()]) if (node.startsWith('v:')) add(this.find(node), [node.slice(2)]);
    for (let changed = true, rounds = 0; changed && rounds < 1000; rounds++) {
      changed = false;
      for (const [from, to] of this.oneWay) {
        const v = vals.get(this.find(from));
        if (v?.size && add(this.find(to), v)) changed = true;
      }
      for (const { target, sources } of this.allOf) {
        const sets = sources.map((s) => vals.get(this.find(s)));
        if (sets.length === 0 || sets.some((s) => !s?.size)) continue;
        const common = [...sets[0]!].filter((v) => sets.every((s) => s!.has(v)));
        if (common.length && add(this.find(target), common)) changed = true;
      }
    }
    this.solved = vals;
  }
}

// ---- scopes -----------------------------------------------------------------------------------

interface Rel {
  id: number;
  /** Alias, or the table / CTE name. */
  name: string;
  /** A base table of the public schema (not for CTE, subquery and function ranges). */
  table?: string;
  /** Known column names; undefined = unknown (accept any). */
  columns?: string[];
  /** `excluded` of ON CONFLICT: a pseudo-row, not a table access. */
  pseudo?: boolean;
}

interface Block {
  parent: Block | undefined;
  rels: Rel[];
  ctes: Map<string, Output[]>;
}

interface Output {
  name: string;
  node: string;
}

interface Ref {
  node: string;
  /** Resolved in an enclosing block (a correlation). */
  outer: boolean;
}

const SYSTEM_SCHEMAS = new Set(['pg_catalog', 'information_schema']);

type Mode = 'read' | 'insert' | 'update' | 'delete';

const LOCK_NAMES: Record<string, string> = {
  LCS_FORKEYSHARE: 'FOR KEY SHARE',
  LCS_FORSHARE: 'FOR SHARE',
  LCS_FORNOKEYUPDATE: 'FOR NO KEY UPDATE',
  LCS_FORUPDATE: 'FOR UPDATE',
};

function sval(n: N): string | undefined {
  return n?.String?.sval;
}

function constText(c: N): string | undefined {
  if (!c || c.isnull) return undefined;
  if (c.sval) return `'${c.sval.sval ?? ''}'`;
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.fval) return c.fval.fval;
  if (c.boolval) return String(c.boolval.boolval ?? false);
  if (c.bsval) return c.bsval.bsval;
  return c.ival === undefined ? undefined : '0';
}

function funcName(f: N): string {
  const parts = (f.funcname ?? []).map(sval).filter(Boolean) as string[];
  return parts[parts.length - 1] ?? '?';
}

class StatementAnalyzer {
  private readonly classes = new Classes();
  private nextId = 0;
  private fresh = 0;
  /** Every access to a base table, with the node of its distribution column. */
  private readonly accesses: Array<{ rel: Rel; placement: Placement | undefined; dist?: string; mode: Mode }> = [];
  readonly blockers: string[] = [];
  readonly multiShardBlockers: string[] = [];

  constructor(private readonly schema: Schema) {}

  // -- nodes --

  private col(rel: Rel, column: string): string {
    return `c:${rel.id}.${column}`;
  }

  private freshNode(): string {
    return `m:${this.fresh++}`;
  }

  private newRel(block: Block, name: string, extra: Partial<Rel> = {}): Rel {
    const rel: Rel = { id: this.nextId++, name, ...extra };
    block.rels.push(rel);
    return rel;
  }

  private tableRel(block: Block, rv: N, mode: Mode): Rel | undefined {
    const schema = rv.schemaname as string | undefined;
    const relname = String(rv.relname);
    if (schema && SYSTEM_SCHEMAS.has(schema)) return undefined;
    if (!schema && relname.startsWith('pg_')) return undefined;
    const alias = rv.alias?.aliasname ?? relname;
    const columns = this.schema.columns.get(relname);
    const rel = this.newRel(block, alias, { table: relname, columns });
    const placement = placementOf(relname);
    const dist = placement?.kind === 'distributed' ? this.col(rel, placement.column) : undefined;
    this.accesses.push({ rel, placement, dist, mode });
    return rel;
  }

  private cteOutputs(block: Block | undefined, name: string): Output[] | undefined {
    for (let b = block; b; b = b.parent) {
      const o = b.ctes.get(name);
      if (o) return o;
    }
    return undefined;
  }

  /** A range over outputs computed elsewhere (CTE, subquery, VALUES). */
  private derivedRel(block: Block, name: string, outputs: Output[], colnames: string[] | undefined, twoWay: boolean): Rel {
    const names = colnames?.length ? colnames.concat(outputs.slice(colnames.length).map((o) => o.name)) : outputs.map((o) => o.name);
    const rel = this.newRel(block, name, { columns: names });
    outputs.forEach((o, i) => {
      const node = this.col(rel, names[i]!);
      if (twoWay) this.classes.same(node, o.node);
      else this.classes.flows(o.node, node);
    });
    return rel;
  }

  // -- name resolution --

  private resolve(block: Block, fields: N[]): Ref | undefined {
    const names = fields.map(sval);
    if (names.some((n) => n === undefined)) return undefined; // a star
    const column = names[names.length - 1]!;
    const qualifier = names.length >= 2 ? names[names.length - 2] : undefined;
    let outer = false;
    for (let b: Block | undefined = block; b; b = b.parent, outer = true) {
      if (qualifier !== undefined) {
        const rel = [...b.rels].reverse().find((r) => r.name === qualifier);
        if (rel) return { node: this.col(rel, column), outer };
      } else {
        const rel = b.rels.find((r) => r.columns?.includes(column)) ?? (b.rels.length === 1 && !b.rels[0]!.columns ? b.rels[0] : undefined);
        if (rel) return { node: this.col(rel, column), outer };
      }
    }
    return undefined;
  }

  /** The node an expression stands for, when it is a column or a single value. */
  private exprRef(block: Block, e: N): Ref | undefined {
    if (!e) return undefined;
    if (e.ColumnRef) return this.resolve(block, e.ColumnRef.fields ?? []);
    if (e.TypeCast?.arg?.ColumnRef) return this.exprRef(block, e.TypeCast.arg);
    const value = pureValue(e);
    if (value !== undefined) return { node: `v:${value}`, outer: false };
    if (e.SubLink && e.SubLink.subLinkType === 'EXPR_SUBLINK') {
      const out = this.select(e.SubLink.subselect?.SelectStmt, block);
      const first = out[0];
      if (!first) return undefined;
      const node = this.freshNode();
      this.classes.flows(first.node, node);
      return { node, outer: false };
    }
    return undefined;
  }

  private equal(block: Block, l: N, r: N): void {
    const a = this.exprRef(block, l);
    const b = this.exprRef(block, r);
    if (!a) this.walk(block, l);
    if (!b) this.walk(block, r);
    if (!a || !b) return;
    if (a.outer && b.outer) return;
    if (a.outer) this.classes.flows(a.node, b.node);
    else if (b.outer) this.classes.flows(b.node, a.node);
    else this.classes.same(a.node, b.node);
  }

  /** `a = b`, or `(a1, a2) = (b1, b2)` pairwise. */
  private equalities(block: Block, l: N, r: N): void {
    const left: N[] | undefined = l?.RowExpr?.args;
    const right: N[] | undefined = r?.RowExpr?.args;
    if (left && right && left.length === right.length) left.forEach((a, i) => this.equal(block, a, right[i]));
    else this.equal(block, l, r);
  }

  /** A boolean condition: its top-level AND conjuncts restrict; everything else is walked for subqueries. */
  private condition(block: Block, e: N): void {
    if (!e) return;
    if (e.BoolExpr?.boolop === 'AND_EXPR') {
      for (const a of e.BoolExpr.args ?? []) this.condition(block, a);
      return;
    }
    const x = e.A_Expr;
    if (x && (x.kind === 'AEXPR_OP' || x.kind === undefined || x.kind === 'AEXPR_NOT_DISTINCT') && sval(x.name?.[0]) === '=') {
      this.equalities(block, x.lexpr, x.rexpr);
      return;
    }
    if (x && x.kind === 'AEXPR_IN' && sval(x.name?.[0]) === '=') {
      const items: N[] = x.rexpr?.List?.items ?? [];
      if (items.length === 1) this.equalities(block, x.lexpr, items[0]);
      else this.walk(block, e);
      return;
    }
    const s = e.SubLink;
    if (s && s.subLinkType === 'ANY_SUBLINK' && (!s.operName || sval(s.operName[0]) === '=')) {
      const left = this.exprRef(block, s.testexpr);
      if (!left) this.walk(block, s.testexpr);
      const out = this.select(s.subselect?.SelectStmt, block);
      if (left && out[0] && !left.outer) this.classes.same(left.node, out[0].node);
      return;
    }
    this.walk(block, e);
  }

  /** Finds subqueries in any expression (restricting nothing itself). */
  private walk(block: Block, e: N): void {
    if (!e || typeof e !== 'object') return;
    if (Array.isArray(e)) {
      for (const x of e) this.walk(block, x);
      return;
    }
    if (e.SubLink) {
      if (e.SubLink.testexpr) this.walk(block, e.SubLink.testexpr);
      this.select(e.SubLink.subselect?.SelectStmt, block);
      return;
    }
    for (const v of Object.values(e)) if (v && typeof v === 'object') this.walk(block, v);
  }

  // -- FROM --

  private from(block: Block, item: N, mode: Mode = 'read'): void {
    if (item.RangeVar) {
      const rv = item.RangeVar;
      const cte = !rv.schemaname ? this.cteOutputs(block, rv.relname) : undefined;
      if (cte) this.derivedRel(block, rv.alias?.aliasname ?? rv.relname, cte, rv.alias?.colnames?.map(sval), false);
      else this.tableRel(block, rv, mode);
      return;
    }
    if (item.RangeSubselect) {
      const sub = item.RangeSubselect;
      const sel = sub.subquery?.SelectStmt;
      const out = this.select(sel, block);
      const pushdown = sel && !sel.limitCount && !sel.limitOffset && !(sel.lockingClause?.length) && (sel.op ?? 'SETOP_NONE') === 'SETOP_NONE';
      this.derivedRel(block, sub.alias?.aliasname ?? '?subquery', out, sub.alias?.colnames?.map(sval), !!pushdown);
      return;
    }
    if (item.RangeFunction) {
      const rf = item.RangeFunction;
      this.walk(block, rf.functions);
      const names: string[] | undefined = rf.alias?.colnames?.map(sval) ?? rf.coldeflist?.map((c: N) => c.ColumnDef?.colname);
      const rel = this.newRel(block, rf.alias?.aliasname ?? '?function', { columns: names });
      void rel; // its columns are independent nodes: a set-returning function gives many values
      return;
    }
    if (item.JoinExpr) {
      const j = item.JoinExpr;
      this.from(block, j.larg);
      const before = block.rels.length;
      this.from(block, j.rarg);
      if (j.quals) this.condition(block, j.quals);
      for (const u of j.usingClause ?? []) {
        const name = sval(u)!;
        const left = block.rels.slice(0, before).reverse().find((r) => !r.columns || r.columns.includes(name));
        const right = block.rels.slice(before).find((r) => !r.columns || r.columns.includes(name));
        if (left && right) this.classes.same(this.col(left, name), this.col(right, name));
      }
      return;
    }
    this.walk(block, item);
  }

  // -- SELECT --

  private withClause(w: N, block: Block): void {
    for (const c of w?.ctes ?? []) {
      const cte = c.CommonTableExpr;
      const q = cte.ctequery;
      const child: Block = { parent: block, rels: [], ctes: new Map() };
      let out: Output[];
      if (q.SelectStmt) out = this.select(q.SelectStmt, block);
      else out = this.dml(q, child);
      const names: string[] = cte.aliascolnames?.map(sval) ?? [];
      block.ctes.set(
        cte.ctename,
        out.map((o, i) => ({ name: names[i] ?? o.name, node: o.node })),
      );
    }
  }

  /** Analyzes a SELECT in a new block under `parent`; returns its output columns. */
  select(sel: N, parent: Block | undefined): Output[] {
    if (!sel) return [];
    const block: Block = { parent, rels: [], ctes: new Map() };
    if (sel.withClause) this.withClause(sel.withClause, block);
    if (sel.op && sel.op !== 'SETOP_NONE') {
      const arms = [this.select(sel.larg, block), this.select(sel.rarg, block)];
      return arms[0]!.map((o, i) => {
        const node = this.freshNode();
        const sources = arms.map((a) => a[i]?.node).filter(Boolean) as string[];
        for (const s of sources) this.classes.flows(node, s);
        this.classes.flowsWhenAll(node, sources);
        return { name: o.name, node };
      });
    }
    if (sel.valuesLists) {
      const rows: N[][] = sel.valuesLists.map((l: N) => l.List?.items ?? []);
      const width = rows[0]?.length ?? 0;
      const outs: Output[] = [];
      for (let i = 0; i < width; i++) {
        const node = this.freshNode();
        for (const row of rows) {
          const r = this.exprRef(block, row[i]);
          if (r) this.classes.flows(r.node, node);
          else this.walk(block, row[i]);
        }
        outs.push({ name: `column${i + 1}`, node });
      }
      return outs;
    }
    for (const item of sel.fromClause ?? []) this.from(block, item);
    if (sel.whereClause) this.condition(block, sel.whereClause);
    this.walk(block, sel.havingClause);
    this.walk(block, sel.sortClause);
    this.walk(block, sel.groupClause);
    if (sel.lockingClause?.length) this.locks(block, sel.lockingClause);
    return this.targets(block, sel.targetList ?? []);
  }

  private targets(block: Block, list: N[]): Output[] {
    const outs: Output[] = [];
    for (const t of list) {
      const rt = t.ResTarget;
      const v = rt?.val;
      const fields: N[] | undefined = v?.ColumnRef?.fields;
      if (fields && fields[fields.length - 1]?.A_Star) {
        const qualifier = fields.length >= 2 ? sval(fields[fields.length - 2]) : undefined;
        const rels = qualifier ? block.rels.filter((r) => r.name === qualifier) : block.rels;
        for (const r of rels) for (const c of r.columns ?? []) outs.push({ name: c, node: this.col(r, c) });
        continue;
      }
      const ref = this.exprRef(block, v);
      if (!ref) this.walk(block, v);
      const name = rt?.name ?? (fields ? sval(fields[fields.length - 1]) : v?.FuncCall ? funcName(v.FuncCall) : undefined) ?? '?column?';
      outs.push({ name, node: ref && !ref.outer ? ref.node : this.freshNode() });
    }
    return outs;
  }

  private locks(block: Block, clauses: N[]): void {
    for (const c of clauses) {
      const lc = c.LockingClause;
      const named: string[] = (lc?.lockedRels ?? []).map((r: N) => r.RangeVar?.relname);
      for (const rel of block.rels) {
        if (!rel.table || (named.length && !named.includes(rel.name) && !named.includes(rel.table))) continue;
        if (placementOf(rel.table)?.kind === 'distributed') {
          this.multiShardBlockers.push(`row lock (${LOCK_NAMES[lc?.strength] ?? 'FOR UPDATE'}) on ${rel.table}: Citus takes row locks in single-shard queries only`);
        }
      }
    }
  }

  // -- INSERT / UPDATE / DELETE --

  dml(stmt: N, block: Block): Output[] {
    if (stmt.InsertStmt) return this.insert(stmt.InsertStmt, block);
    if (stmt.UpdateStmt) return this.update(stmt.UpdateStmt, block);
    if (stmt.DeleteStmt) return this.delete(stmt.DeleteStmt, block);
    if (stmt.SelectStmt) return this.select(stmt.SelectStmt, block.parent);
    return [];
  }

  private insert(ins: N, block: Block): Output[] {
    if (ins.withClause) this.withClause(ins.withClause, block);
    const table = String(ins.relation.relname);
    const cols: string[] = ins.cols?.length ? ins.cols.map((c: N) => c.ResTarget?.name) : (this.schema.columns.get(table) ?? []);
    const sel = ins.selectStmt?.SelectStmt;
    // The source first: the target table is not visible in it.
    const sources: Array<Array<string | undefined>> = [];
    if (sel?.valuesLists) {
      for (const l of sel.valuesLists) {
        const row: N[] = l.List?.items ?? [];
        sources.push(
          row.map((v, i) => {
            if (hasSubLink(v)) this.blockers.push(`a subquery inside INSERT ... VALUES (${table}.${cols[i] ?? '?'}): Citus refuses subqueries within INSERT queries; write INSERT ... SELECT`);
            const r = this.exprRef(block, v);
            if (!r) this.walk(block, v);
            return r?.node;
          }),
        );
      }
    } else if (sel) {
      sources.push(this.select(sel, block).map((o) => o.node));
    }
    const target = this.tableRel(block, ins.relation, 'insert');
    if (target) {
      for (const row of sources) row.forEach((node, i) => node && cols[i] && this.classes.same(this.col(target, cols[i]!), node));
    }
    const oc = ins.onConflictClause;
    if (oc && target) {
      this.newRel(block, 'excluded', { columns: target.columns, pseudo: true });
      this.setList(block, table, oc.targetList ?? [], true);
      this.walk(block, oc.whereClause);
    }
    return target ? this.targets(block, returning(ins)) : [];
  }

  private update(up: N, block: Block): Output[] {
    if (up.withClause) this.withClause(up.withClause, block);
    const target = this.tableRel(block, up.relation, 'update');
    for (const item of up.fromClause ?? []) this.from(block, item);
    if (up.whereClause) this.condition(block, up.whereClause);
    const table = String(up.relation.relname);
    this.setList(block, table, up.targetList ?? [], true);
    if (placementOf(table)?.kind === 'distributed') this.functionsInUpdate(table, [up.targetList, up.whereClause]);
    return target ? this.targets(block, returning(up)) : [];
  }

  private delete(del: N, block: Block): Output[] {
    if (del.withClause) this.withClause(del.withClause, block);
    const target = this.tableRel(block, del.relation, 'delete');
    for (const item of del.usingClause ?? []) this.from(block, item);
    if (del.whereClause) this.condition(block, del.whereClause);
    return target ? this.targets(block, returning(del)) : [];
  }

  private setList(block: Block, table: string, list: N[], walk: boolean): void {
    const p = placementOf(table);
    for (const t of list) {
      const name = t.ResTarget?.name;
      if (p?.kind === 'distributed' && name === p.column) this.blockers.push(`changes the distribution column ${table}.${name}: Citus cannot move a row to another shard`);
      if (walk) this.walk(block, t.ResTarget?.val);
    }
  }

  /** Citus: functions in an UPDATE of a distributed table must not be VOLATILE, nor STABLE with column arguments. */
  private functionsInUpdate(table: string, parts: N[]): void {
    const visit = (e: N): void => {
      if (!e || typeof e !== 'object') return;
      if (Array.isArray(e)) return e.forEach(visit);
      if (e.SubLink) return; // evaluated as its own query
      if (e.FuncCall) {
        const name = funcName(e.FuncCall);
        const vol = this.schema.volatility.get(name);
        if (vol && !vol.has('i') && !vol.has('s')) this.blockers.push(`volatile function ${name}() in an UPDATE of distributed table ${table}: Citus refuses it`);
        else if (vol && !vol.has('i') && hasColumnRef(e.FuncCall.args)) this.blockers.push(`stable function ${name}() called with a column in an UPDATE of distributed table ${table}: Citus refuses it`);
      }
      for (const v of Object.values(e)) if (v && typeof v === 'object') visit(v);
    };
    parts.forEach(visit);
  }

  // -- verdict --

  verdict(): { tables: string[]; problems: string[]; values: string[]; unknownTables: string[] } {
    const tables = [...new Set(this.accesses.map((a) => a.rel.table!))];
    const unknownTables = tables.filter((t) => !placementOf(t));
    const problems: string[] = [];
    const values = new Set<string>();
    const distributed = this.accesses.filter((a) => a.dist);
    for (const a of distributed) {
      const v = this.classes.valuesOf(a.dist!);
      const name = a.rel.name === a.rel.table ? a.rel.table : `${a.rel.table} (as ${a.rel.name})`;
      const column = (a.placement as { column: string }).column;
      if (!v.size) {
        problems.push(
          a.mode === 'insert'
            ? `insert into ${name}: the new rows' ${column} is not one value (nor taken from a table restricted to one)`
            : `${name}: no \`${column} = <one value>\` filter, and not joined on ${column} to a table that has one`,
        );
      }
      for (const x of v) values.add(x);
    }
    if (values.size > 1) problems.push(`restricted to more than one customer (${[...values].join(', ')}): a router query touches one`);
    const kinds = new Set(this.accesses.map((a) => a.placement?.kind));
    if (kinds.has('local') && kinds.has('distributed')) {
      problems.push(
        `uses coordinator-local table(s) ${this.accesses.filter((a) => a.placement?.kind === 'local').map((a) => a.rel.table).join(', ')} and distributed table(s) in one statement`,
      );
    }
    const writesReference = this.accesses.some((a) => a.mode !== 'read' && a.placement?.kind === 'reference');
    if (writesReference && kinds.has('distributed')) this.blockers.push('modifies a reference table while reading a distributed one: Citus refuses it');
    return { tables, problems, values: [...values], unknownTables };
  }
}

/** RETURNING items (PostgreSQL 18 wraps them in a ReturningClause, for OLD/NEW). */
function returning(stmt: N): N[] {
  return stmt.returningClause?.exprs ?? stmt.returningList ?? [];
}

/** A parameter, a literal, or a function of those: one value per execution. */
function pureValue(e: N): string | undefined {
  if (!e) return undefined;
  if (e.ParamRef) return `$${e.ParamRef.number}`;
  if (e.A_Const) return constText(e.A_Const);
  if (e.TypeCast) return pureValue(e.TypeCast.arg);
  if (e.FuncCall && !e.FuncCall.agg_star && !e.FuncCall.over) {
    const args: N[] = e.FuncCall.args ?? [];
    const vals = args.map(pureValue);
    if (vals.every((v) => v !== undefined)) return `${funcName(e.FuncCall)}(${vals.join(', ')})`;
  }
  return undefined;
}

function hasSubLink(e: N): boolean {
  if (!e || typeof e !== 'object') return false;
  if (Array.isArray(e)) return e.some(hasSubLink);
  if (e.SubLink) return true;
  return Object.values(e).some((v) => v && typeof v === 'object' && hasSubLink(v));
}

function hasColumnRef(e: N): boolean {
  if (!e || typeof e !== 'object') return false;
  if (Array.isArray(e)) return e.some(hasColumnRef);
  if (e.ColumnRef) return true;
  if (e.SubLink) return false;
  return Object.values(e).some((v) => v && typeof v === 'object' && hasColumnRef(v));
}

const CONTROL = new Set([
  'TransactionStmt', 'VariableSetStmt', 'VariableShowStmt', 'ListenStmt', 'UnlistenStmt', 'NotifyStmt',
  'DiscardStmt', 'DeallocateStmt', 'PrepareStmt', 'ExecuteStmt', 'CheckPointStmt', 'LoadStmt',
]);
const DML = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Analyzes one captured text (which may hold several statements). */
export function analyze(text: string, schema: Schema): Analysis {
  const parsed = parseSync(text) as N;
  const result: Analysis = { kind: 'control', tables: [], problems: [], blockers: [], multiShardBlockers: [], values: [], unknownTables: [] };
  let sawDdl = false;
  let sawDml = false;
  for (const raw of parsed.stmts ?? []) {
    const stmt = raw.stmt ?? {};
    const type = Object.keys(stmt)[0] ?? '';
    if (CONTROL.has(type)) continue;
    if (!DML.has(type)) {
      sawDdl = true;
      continue;
    }
    sawDml = true;
    const a = new StatementAnalyzer(schema);
    if (type === 'MergeStmt') {
      result.problems.push('MERGE: not analyzed by this check');
      continue;
    }
    if (type === 'SelectStmt') a.select(stmt.SelectStmt, undefined);
    else a.dml(stmt, { parent: undefined, rels: [], ctes: new Map() });
    const v = a.verdict();
    result.tables.push(...v.tables);
    result.problems.push(...v.problems);
    result.values.push(...v.values);
    result.unknownTables.push(...v.unknownTables);
    result.blockers.push(...a.blockers);
    result.multiShardBlockers.push(...a.multiShardBlockers);
  }
  result.kind = sawDml ? 'dml' : sawDdl ? 'ddl' : 'control';
  for (const k of ['tables', 'problems', 'blockers', 'multiShardBlockers', 'values', 'unknownTables'] as const) result[k] = [...new Set(result[k])];
  return result;
}
