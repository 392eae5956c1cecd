import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * Under `deltas-preferred` the edge's retention pass (its cron handler, run here on the real edge)
 * deletes old full artifacts; a yank never moves a channel onto a version it cannot serve, so a second
 * yank before the next pass passes over such a version and says so in `headsPassedOver` (README,
 * "Channels"). The CLI must tell the maintainer: the channel went further back than they may expect.
 */
const suite = useEdgeWorkspace(
  {},
  { runtimeConfig: { delta: { storage: 'deltas-preferred', keepFullVersions: 2 } } },
)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const run = promisify(execFile)

async function publish(name: string, version: string) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 3_000)
  await suite.publish(art.path, name, version)
}

describe('deltaport yank after retention deleted a full artifact', () => {
  it('warns which versions the channel passed over, and lists them under --json', async () => {
    await publish('passed', '1.1.0')
    await publish('passed', '1.2.0')
    await publish('passed', '1.3.0')
    // A backport, newest by serial: retention keeps it and 1.3.0 (the newest two), 1.3.0 is the head and
    // 1.2.0 what a yank of the head falls back to; 1.1.0's full artifact goes.
    await publish('passed', '1.0.0')
    await suite.edge.runScheduled()

    const env = { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN }
    const cli = (...args: string[]) =>
      run(process.execPath, [BIN, '--config', suite.ws.configFile, ...args], { env })

    const first = await cli('yank', 'passed@1.3.0', '--reason', 'bad build')
    expect(first.stdout).toContain('passed@1.3.0 yanked (signed); channels: stable → 1.2.0')
    expect(first.stderr).not.toContain('passed over')

    // No retention pass in between: 1.1.0, the next one down, cannot be installed, so the head skips it.
    const second = await cli('yank', 'passed@1.2.0', '--reason', 'same bug')
    expect(second.stdout).toContain('passed@1.2.0 yanked (signed); channels: stable → 1.0.0')
    expect(second.stderr).toContain(
      'warning: channel stable passed over 1.1.0: retention deleted their full artifacts, so nobody could install them or move back to them',
    )
    expect(second.stdout).not.toContain('passed over')

    // The same answer as JSON, for scripts: undo and yank again.
    await cli('yank', 'passed@1.2.0', '--undo')
    const json = await cli('--json', 'yank', 'passed@1.2.0', '--reason', 'same bug')
    expect(JSON.parse(json.stdout)).toMatchObject({
      ok: true,
      yank: { channels: { stable: '1.0.0' }, headsPassedOver: { stable: ['1.1.0'] } },
    })
  })
})
