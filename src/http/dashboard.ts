import fs from 'node:fs';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config';
import { rootDir } from '../db/orm';

/**
 * The dashboard (packages/dashboard, built by `npm run build`) at /dashboard: hashed assets cached
 * for a year, index.html never cached and served for every client route (a reload keeps the
 * page), a strict Content-Security-Policy (scripts, styles and requests to this origin only; no
 * inline code), and framing refused except for the portal, which a product may embed from the
 * origins in TOLLGATE_PORTAL_FRAME_ANCESTORS. TOLLGATE_DASHBOARD=false turns it off.
 */
export const DASHBOARD_DIR = path.join(rootDir, 'packages', 'dashboard', 'dist');

export function csp(frameAncestors: string): string {
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    `frame-ancestors ${frameAncestors}`,
  ].join('; ');
}

export async function registerDashboard(fastify: FastifyInstance, config: Config): Promise<boolean> {
  if (!config.dashboard.enabled) return false;
  const index = path.join(DASHBOARD_DIR, 'index.html');
  if (!fs.existsSync(index)) {
    fastify.log.warn(`dashboard not built (${index} is missing): run npm run build`);
    return false;
  }
  const html = fs.readFileSync(index);
  const headers = (url: string) => ({
    'content-security-policy': csp(url.startsWith('/dashboard/portal') ? config.dashboard.portalFrameAncestors : "'none'"),
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  await fastify.register(fastifyStatic, {
    root: path.join(DASHBOARD_DIR, 'assets'),
    prefix: '/dashboard/assets/',
    immutable: true,
    maxAge: '365d',
    index: false,
    setHeaders: (res) => {
      for (const [k, v] of Object.entries(headers('/dashboard/assets'))) res.setHeader(k, v);
    },
  });
  const page = async (request: { url: string }, reply: { headers(h: Record<string, string>): unknown; type(t: string): unknown; send(b: Buffer): unknown }) => {
    reply.headers({ ...headers(request.url), 'cache-control': 'no-cache' });
    reply.type('text/html; charset=utf-8');
    return reply.send(html);
  };
  fastify.get('/dashboard', page);
  fastify.get('/dashboard/*', async (request, reply) => {
    if (request.url.startsWith('/dashboard/assets/')) return reply.code(404).send({ error: 'not found' });
    return page(request, reply);
  });
  return true;
}
