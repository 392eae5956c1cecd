import type { Command } from 'commander'
import { type AgentConfig, publishToken } from '../config.ts'
import { AgentError } from '../errors.ts'
import type { Reporter } from '../output.ts'
import { setYank } from '../yank.ts'
import { parseVersionSpec } from './arguments.ts'

/**
 * `deltaport yank <name>@<version> --reason "…"` pulls a bad release: channels stop pointing at it, a
 * rollout of it is aborted, agents stop picking it. `--undo` restores it.
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
    .action(async (spec: string, options: { reason?: string; undo?: boolean }) => {
      const { name, version } = parseVersionSpec(spec)
      if (!version) throw new AgentError('usage', `yank needs a version: ${name}@<version>`)
      const reason = options.undo ? null : options.reason?.trim()
      if (reason === undefined || reason === '')
        throw new AgentError('usage', 'say why with --reason "…" (or restore with --undo)')
      if (reason !== null && reason.length > 500)
        throw new AgentError('usage', '--reason is at most 500 characters')
      const loaded = await config()
      const result = await setYank({ edgeUrl: loaded.edgeUrl, token: publishToken(), name, version, reason })
      const heads = Object.entries(result.channels)
        .map(([channel, head]) => `${channel} → ${head}`)
        .join(', ')
      const out = reporter()
      if (result.rolloutsAborted.length > 0)
        out.info(`aborted the rollout of ${version} on ${result.rolloutsAborted.join(', ')}`)
      out.result(
        `${name}@${version} ${result.yanked ? 'yanked' : 'restored'}; channels: ${heads || 'none'}`,
        { yank: result },
      )
    })
}
