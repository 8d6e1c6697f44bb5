import { Role } from '../modules/auth/auth.entities';
import { runCli } from './run';

const usage = `usage:
  npm run keys -- create --role ADMIN|SERVER --name <name>
  npm run keys -- revoke <key id>
  npm run keys -- list`;

runCli(async ({ services }) => {
  const [command, ...rest] = process.argv.slice(2);
  const flag = (name: string) => {
    const i = rest.indexOf(`--${name}`);
    return i >= 0 ? rest[i + 1] : undefined;
  };
  switch (command) {
    case 'create': {
      const role = (flag('role') ?? '').toUpperCase();
      const name = flag('name');
      if ((role !== Role.ADMIN && role !== Role.SERVER) || !name) {
        process.stderr.write(`${usage}\n`);
        return 2;
      }
      const { key, secret } = await services.auth.createApiKey(role as Role, name);
      process.stdout.write(`Created ${key.role} key ${key.id} (${key.name}). The secret is shown once:\n${secret}\n`);
      return 0;
    }
    case 'revoke': {
      if (!rest[0]) {
        process.stderr.write(`${usage}\n`);
        return 2;
      }
      const key = await services.auth.revokeApiKey(rest[0]);
      process.stdout.write(`Revoked ${key.id} (${key.name}).\n`);
      return 0;
    }
    case 'list': {
      for (const k of await services.auth.listApiKeys()) {
        process.stdout.write(`${k.id}\t${k.role}\t${k.revokedAt ? 'revoked' : 'active'}\t${k.name}\n`);
      }
      return 0;
    }
    default:
      process.stderr.write(`${usage}\n`);
      return 2;
  }
});
