import type { Command } from 'commander'
import { type AgentConfig, publishToken } from '../config.ts'
import { AgentError } from '../errors.ts'
import type { Reporter } from '../output.ts'
import { refreshRootTrust } from '../root-trust.ts'
import { signerPolicyOf } from '../trust.ts'
import { DEFAULT_STATEMENT_DAYS, setYank } from '../yank.ts'
import { parseDays, parseVersionSpec, SIGNING_KEY_OPTION } from './arguments.ts'

/**
 * `deltaport yank <name>@<version> --reason "…"` pulls a bad release: channels stop pointing at it, a
 * rollout of it is aborted, agents stop picking it. `--undo` restores it. Signed with the maintainer's
 * key when there is one, so devices running it move back (`--unsigned` only warns them).
 */
export function registerYankCommand(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
): void {
  program
    .command('yank <name@version>')
    .description(
      'pull a published release: channels move off it, agents stop installing it (--undo restores)',
    )
    .option('--reason <text>', 'why (shown to device owners; required unless --undo)')
    .option('--undo', 'restore a yanked version')
    .option(...SIGNING_KEY_OPTION)
    .option('--unsigned', 'do not sign: devices running it are warned but not moved back')
    .option(
      '--expires-days <days>',
      'how long devices act on the signed statement',
      parseDays,
      DEFAULT_STATEMENT_DAYS,
    )
    .action(async (spec: string, options: YankOptions) => {
      const { name, version } = parseVersionSpec(spec)
      if (!version) throw new AgentError('usage', `yank needs a version: ${name}@<version>`)
      // A restore carries no reason (the signed statement has none): one given would be dropped unsaid.
      if (options.undo && options.reason !== undefined)
        throw new AgentError('usage', '--undo restores the release and takes no --reason')
      const reason = options.undo ? null : options.reason?.trim()
      if (reason === undefined || reason === '')
        throw new AgentError('usage', 'say why with --reason "…" (or restore with --undo)')
      if (reason !== null && reason.length > 500)
        throw new AgentError('usage', '--reason is at most 500 characters')
      const loaded = await config()
      const keyFile = options.unsigned ? undefined : (options.key ?? loaded.signingKey)
      const result = await setYank({
        edgeUrl: loaded.edgeUrl,
        token: publishToken(),
        name,
        version,
        reason,
        ...(keyFile
          ? {
              keyFile,
              expiresDays: options.expiresDays,
              signers: signerPolicyOf(await refreshRootTrust(loaded)),
            }
          : {}),
      })
      const heads = Object.entries(result.channels)
        .map(([channel, head]) => `${channel} → ${head}`)
        .join(', ')
      const out = reporter()
      if (result.rolloutsAborted.length > 0)
        out.info(`aborted the rollout of ${version} on ${result.rolloutsAborted.join(', ')}`)
      // The heads line shows only channels that have one: a channel emptied by the yank would go unsaid.
      for (const channel of result.channelsWithoutHead)
        out.info(
          `warning: channel ${channel} has no head now (every version of it is yanked): installs and updates from it find nothing until a version is published to it or restored (--undo)`,
        )
      for (const [channel, passed] of Object.entries(result.headsPassedOver))
        out.info(
          `warning: channel ${channel} passed over ${passed.join(', ')}: retention deleted their full artifacts, so nobody could install them or move back to them`,
        )
      if (!result.signed && result.yanked)
        out.info('unsigned: devices running it are warned but stay on it (pass --key to sign)')
      out.result(
        `${name}@${version} ${result.yanked ? 'yanked' : 'restored'}${result.signed ? ' (signed)' : ''}; channels: ${heads || 'none'}`,
        { yank: result },
      )
    })
}

interface YankOptions {
  reason?: string
  undo?: boolean
  key?: string[]
  unsigned?: boolean
  expiresDays: number
}
