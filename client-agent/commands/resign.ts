import type { Command } from 'commander'
import { type AgentConfig, publishToken } from '../config.ts'
import { AgentError } from '../errors.ts'
import type { Reporter } from '../output.ts'
import { resignManifests } from '../resign.ts'
import { refreshRootTrust } from '../root-trust.ts'
import { signerPolicyOf } from '../trust.ts'
import { parseDays, parseVersionSpec, SIGNING_KEY_OPTION } from './arguments.ts'

/**
 * `deltaport resign <name>[@version] [--expires-days 90] [--within 30] [--key f]`: extend the expiry of
 * published manifests (one version, or every one expiring within `--within` days: the cron form).
 */
export function registerResignCommand(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
): void {
  program
    .command('resign <spec>')
    .description('re-sign published manifests with a later expiry (one version, or all expiring soon)')
    .option('--expires-days <days>', 'new manifest lifetime in days from now', parseDays, 90)
    .option(
      '--within <days>',
      'without @version: re-sign those expiring within this many days (never shortening one)',
      parseDays,
      30,
    )
    .option(...SIGNING_KEY_OPTION)
    .action(async (spec: string, options: { expiresDays: number; within: number; key?: string[] }) => {
      const loaded = await config()
      const keyFile = options.key ?? loaded.signingKey
      if (!keyFile)
        throw new AgentError('config', 'no signing key: pass --key or set signingKey in the config')
      const { name, version } = parseVersionSpec(spec)
      const refreshed = await refreshRootTrust(loaded)
      const resigned = await resignManifests({
        edgeUrl: loaded.edgeUrl,
        token: publishToken(),
        keyFile,
        name,
        ...(version ? { version } : {}),
        withinDays: options.within,
        expiresInDays: options.expiresDays,
        // Under a root the keys and threshold are the newest root's, as on devices (ADR 0035).
        trustedKeys: refreshed.config.trustedKeys,
        signers: signerPolicyOf(refreshed),
      })
      const out = reporter()
      for (const r of resigned)
        out.info(`${r.name}@${r.version}: expires ${r.expires} (was ${r.previousExpires})`)
      out.result(
        resigned.length === 0
          ? `${name}: no manifest expires within ${options.within} days and before the ${options.expiresDays} days a re-sign would give`
          : `${name}: re-signed ${resigned.length} manifest(s)`,
        { resigned },
      )
    })
}
