import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { badInput } from '../../shared/errors';

/**
 * Where outbound webhooks may go (docs/webhooks.md#safety). A webhook URL is chosen by whoever holds
 * an ADMIN key, and the service sends to it from inside the network: without a check it can be made
 * to call the database's admin port, a cloud metadata service (169.254.169.254) or any internal
 * host (server-side request forgery). So:
 * - `https` only, unless TOLLGATE_WEBHOOK_ALLOW_HTTP=true;
 * - no host that resolves to a private, loopback, link-local, CGNAT, multicast or unspecified
 *   address, unless TOLLGATE_WEBHOOK_ALLOW_PRIVATE=true (the tests' receivers are on loopback);
 * - checked when the endpoint is saved and again on every connection (the address actually
 *   dialled), so a DNS answer that changes after the check (rebinding) is refused too;
 * - redirects are not followed (a 3xx is a failed attempt).
 */
export interface UrlPolicy {
  allowHttp: boolean;
  allowPrivate: boolean;
}

const BLOCKED = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) {
  BLOCKED.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8]] as const) BLOCKED.addSubnet(net, bits, 'ipv6');

/** Whether an IP address is one a webhook may not reach (an IPv4-mapped IPv6 address counts as its IPv4). */
export function isBlockedAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return BLOCKED.check(mapped[1], 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return BLOCKED.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** Validates a webhook URL's form and where its host resolves; BAD_USER_INPUT otherwise. */
export async function checkWebhookUrl(raw: unknown, policy: UrlPolicy): Promise<string> {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 2000) throw badInput('url must be an absolute URL of at most 2000 characters', { field: 'url' });
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw badInput('url is not a valid URL', { field: 'url' });
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && policy.allowHttp)) {
    throw badInput(policy.allowHttp ? 'url must be http or https' : 'url must be https (set TOLLGATE_WEBHOOK_ALLOW_HTTP=true to allow http)', { field: 'url' });
  }
  if (url.username || url.password) throw badInput('url must not carry credentials', { field: 'url' });
  if (url.hash) throw badInput('url must not have a fragment', { field: 'url' });
  if (!policy.allowPrivate) {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    let addresses: string[];
    try {
      addresses = isIP(host) ? [host] : (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
    } catch {
      throw badInput(`url's host '${host}' does not resolve`, { field: 'url' });
    }
    const blocked = addresses.find(isBlockedAddress);
    if (blocked) {
      throw badInput(`url's host resolves to ${blocked}, a private, loopback or link-local address (set TOLLGATE_WEBHOOK_ALLOW_PRIVATE=true to allow)`, { field: 'url' });
    }
  }
  return url.toString();
}
