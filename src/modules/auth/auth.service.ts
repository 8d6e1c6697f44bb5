import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import type { Config } from '../../config';
import { statement, type Db } from '../../db/sql';
import { badInput, notFound, unauthenticated } from '../../shared/errors';
import { Role } from './auth.entities';

/**
 * Who is calling. API keys (ADMIN, SERVER) are stored as SHA-256 digests of their secret (they are
 * long random strings, so a fast digest is the right tool; a password hash would only slow every
 * request). Customer tokens are short-lived HS256 JWTs scoped to one customer.
 */
export interface Principal {
  role: Role;
  /** The API key, for ADMIN and SERVER. */
  keyId: string | null;
  /** The customer a CUSTOMER token is scoped to. */
  customerId: string | null;
  /** Recorded on every write: `key:<id>` or `customer:<id>`. */
  actor: string;
}

export interface ApiKeyInfo {
  id: string;
  name: string;
  role: Role.ADMIN | Role.SERVER;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
}

const FIND_KEY = statement(
  'auth.find_key',
  `select id, name, role, secret_hash, expires_at, revoked_at, now() as now from api_key where secret_hash = $1`,
);

const TOKEN_ISSUER = 'tollgate';
const TOKEN_AUDIENCE = 'tollgate:customer';
export const MAX_TOKEN_TTL_SECONDS = 86_400;

const digest = (secret: string) => createHash('sha256').update(secret, 'utf8').digest('hex');

interface CachedKey {
  principal: Principal | null;
  cachedUntil: number;
  expiresAt: number | null;
}

export class AuthService {
  private tokenKey: Uint8Array | undefined;
  /** Positive and negative lookups by digest; revocation clears it here and, by NOTIFY, on every replica. */
  private readonly cache = new Map<string, CachedKey>();

  constructor(
    private readonly db: Db,
    private readonly config: Config,
  ) {}

  /** Loads (or creates, once for all replicas) the customer-token signing secret. */
  async init(): Promise<void> {
    let secret = this.config.tokenSecret;
    if (!secret) {
      const candidate = randomBytes(48).toString('base64url');
      await this.db.query(
        `insert into setting (key, value) values ('customer_token_secret', $1) on conflict (key) do nothing`,
        [candidate],
      );
      const [row] = await this.db.query<{ value: string }>(
        `select value from setting where key = 'customer_token_secret'`,
      );
      secret = row.value;
    }
    this.tokenKey = new TextEncoder().encode(secret);
  }

  /** Makes sure the key from TOLLGATE_ADMIN_KEY exists (and only that secret carries its id). */
  async ensureEnvAdminKey(secret: string): Promise<void> {
    await this.db.query(
      `insert into api_key (id, name, role, secret_hash) values ('key_env_admin', 'TOLLGATE_ADMIN_KEY', 'ADMIN', $1)
       on conflict (id) do update set secret_hash = excluded.secret_hash, revoked_at = null`,
      [digest(secret)],
    );
    this.invalidate();
  }

  async hasActiveAdminKey(): Promise<boolean> {
    const rows = await this.db.query(
      `select 1 from api_key where role = 'ADMIN' and revoked_at is null and (expires_at is null or expires_at > now()) limit 1`,
    );
    return rows.length > 0;
  }

  async createApiKey(role: Role, name: string, ttlSeconds?: number | null): Promise<{ key: ApiKeyInfo; secret: string }> {
    if (role !== Role.ADMIN && role !== Role.SERVER) throw badInput('API keys are ADMIN or SERVER; customers use tokens');
    const trimmed = name.trim();
    if (trimmed.length < 1 || trimmed.length > 100) throw badInput('name must be 1 to 100 characters');
    if (ttlSeconds !== undefined && ttlSeconds !== null && (!Number.isInteger(ttlSeconds) || ttlSeconds < 60)) {
      throw badInput('ttlSeconds must be an integer of at least 60');
    }
    const id = `key_${randomBytes(8).toString('hex')}`;
    const secret = `tg_${randomBytes(32).toString('base64url')}`;
    const [row] = await this.db.query<Record<string, unknown>>(
      `insert into api_key (id, name, role, secret_hash, expires_at)
       values ($1, $2, $3, $4, case when $5::int is null then null else now() + make_interval(secs => $5::int) end)
       returning id, name, role, created_at, expires_at, revoked_at`,
      [id, trimmed, role, digest(secret), ttlSeconds ?? null],
    );
    return { key: toKeyInfo(row), secret };
  }

  async revokeApiKey(id: string): Promise<ApiKeyInfo> {
    const rows = await this.db.query<Record<string, unknown>>(
      `update api_key set revoked_at = coalesce(revoked_at, now()) where id = $1
       returning id, name, role, created_at, expires_at, revoked_at`,
      [id],
    );
    if (rows.length === 0) throw notFound('ApiKey', id);
    await this.db.query(`select pg_notify('tollgate_auth', 'revoked')`);
    this.invalidate();
    return toKeyInfo(rows[0]);
  }

  async listApiKeys(): Promise<ApiKeyInfo[]> {
    const rows = await this.db.query<Record<string, unknown>>(
      `select id, name, role, created_at, expires_at, revoked_at from api_key order by created_at, id`,
    );
    return rows.map(toKeyInfo);
  }

  /** Drops cached key lookups (after a revocation here or on another replica). */
  invalidate(): void {
    this.cache.clear();
  }

  async createCustomerToken(customerId: string, ttlSeconds: number): Promise<string> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TOKEN_TTL_SECONDS) {
      throw badInput(`ttlSeconds must be an integer between 1 and ${MAX_TOKEN_TTL_SECONDS}`);
    }
    return new SignJWT({ role: Role.CUSTOMER })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(customerId)
      .setIssuer(TOKEN_ISSUER)
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt()
      .setJti(randomBytes(12).toString('base64url'))
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
      .sign(this.key());
  }

  /**
   * Resolves the `Authorization` header. No header: null (anonymous; every field requires a role).
   * A header that is present but wrong, revoked or expired: UNAUTHENTICATED.
   */
  async authenticate(header: string | undefined): Promise<Principal | null> {
    if (header === undefined || header === '') return null;
    const m = /^Bearer\s+(\S{1,4096})\s*$/i.exec(header);
    if (!m) throw unauthenticated('The Authorization header must be "Bearer <API key or customer token>"');
    const credential = m[1];
    if (credential.split('.').length === 3 && !credential.startsWith('tg_')) return this.verifyCustomerToken(credential);
    return this.verifyApiKey(credential);
  }

  private async verifyApiKey(secret: string): Promise<Principal> {
    const hash = digest(secret);
    const nowMs = Date.now();
    const cached = this.cache.get(hash);
    if (cached && cached.cachedUntil > nowMs && (cached.expiresAt === null || cached.expiresAt > nowMs)) {
      if (!cached.principal) throw unauthenticated('Invalid API key');
      return cached.principal;
    }
    const [row] = await this.db.query<{
      id: string;
      role: Role.ADMIN | Role.SERVER;
      secret_hash: string;
      expires_at: Date | null;
      revoked_at: Date | null;
      now: Date;
    }>(FIND_KEY, [hash]);
    const matches =
      row !== undefined && timingSafeEqual(Buffer.from(row.secret_hash, 'hex'), Buffer.from(hash, 'hex'));
    const valid =
      matches && row.revoked_at === null && (row.expires_at === null || row.expires_at.getTime() > row.now.getTime());
    const principal: Principal | null = valid
      ? { role: row.role, keyId: row.id, customerId: null, actor: `key:${row.id}` }
      : null;
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(hash, {
      principal,
      cachedUntil: nowMs + this.config.authCacheTtlSeconds * 1000,
      expiresAt: valid && row.expires_at ? row.expires_at.getTime() : null,
    });
    if (!principal) throw unauthenticated(matches && row.revoked_at ? 'API key revoked' : matches ? 'API key expired' : 'Invalid API key');
    return principal;
  }

  private async verifyCustomerToken(token: string): Promise<Principal> {
    // Strict compact form: base64url decoders skip characters outside the alphabet, which would let
    // a token with appended garbage through.
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/.test(token)) throw unauthenticated('Invalid customer token');
    try {
      const { payload } = await jwtVerify(token, this.key(), {
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        algorithms: ['HS256'],
        requiredClaims: ['exp', 'sub'],
      });
      if (payload.role !== Role.CUSTOMER || typeof payload.sub !== 'string' || payload.sub.length === 0) {
        throw unauthenticated('Invalid customer token');
      }
      return { role: Role.CUSTOMER, keyId: null, customerId: payload.sub, actor: `customer:${payload.sub}` };
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw unauthenticated('Customer token expired');
      if (err instanceof joseErrors.JOSEError) throw unauthenticated('Invalid customer token');
      throw err;
    }
  }

  private key(): Uint8Array {
    if (!this.tokenKey) throw new Error('AuthService.init() was not called');
    return this.tokenKey;
  }
}

function toKeyInfo(row: Record<string, unknown>): ApiKeyInfo {
  return {
    id: row.id as string,
    name: row.name as string,
    role: row.role as Role.ADMIN | Role.SERVER,
    createdAt: row.created_at as Date,
    expiresAt: (row.expires_at as Date | null) ?? null,
    revokedAt: (row.revoked_at as Date | null) ?? null,
  };
}
