import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { RunFiles } from '../run-files.ts'
import {
  cleanup,
  eventTypes,
  journalWith,
  runningArtifacts,
  serviceFile,
  spawnAgent,
  tempDir,
  waitFor,
  within,
} from './harness.ts'

/**
 * The service crashes while the agent replays the journal at start (before it opens its port): the
 * restarted copy takes the writes, and the start's own replay, which retries into whatever serves, must
 * not run beside it. Run in a process of its own: a replay spinning on a write the other one is sending
 * starves its event loop, and the agent never starts.
 */
afterAll(cleanup)

describe('buffered swap: a crash during the start’s journal replay', () => {
  it('starts once the restarted service has taken every journaled write, each once and in order', async () => {
    const dir = await tempDir('deltaport-swap-start-crash-')
    await journalWith(
      dir,
      [1, 2, 3, 4, 5, 6].map((seq) => ({ id: seq, client: 'c', path: `/write/${seq}` })),
    )
    // The first copy dies on its first write; later copies apply each write in 400 ms.
    const artifact = await serviceFile(join(dir, 'service.mjs'), {
      imports: `import { appendFileSync, existsSync, writeFileSync } from 'node:fs'`,
      setup: 'const data = process.env.DELTAPORT_DATA_DIR',
      onEnd: `if (req.url === '/health') return res.end('ok')
    if (!existsSync(data + '/crashed')) {
      writeFileSync(data + '/crashed', '')
      process.exit(1)
    }
    setTimeout(() => {
      appendFileSync(data + '/applied.log', req.url + '\\n')
      res.end('applied')
    }, 400)`,
    })
    const agent = await spawnAgent(
      dir,
      artifact,
      { restartBackoffMs: 100 },
      `process.once('SIGTERM', async () => {
  await supervisor.stop()
  process.exit(0)
})
`,
      { events: true },
    )
    const seen = eventTypes(agent)
    try {
      await waitFor(
        () => seen.includes('started'),
        20_000,
        () => `no start: ${seen}`,
      )
      const applied = (await readFile(join(dir, 'data', 'applied.log'), 'utf8')).split('\n').filter(Boolean)
      expect(applied).toEqual([1, 2, 3, 4, 5, 6].map((seq) => `/write/${seq}`))
      agent.kill('SIGTERM')
      const [code] = await within(once(agent, 'exit'), 20_000, 'the agent exiting')
      expect(code).toBe(0)
    } finally {
      agent.kill('SIGKILL')
      // Whatever it left behind (it never stopped its service when it hung).
      const runFiles = new RunFiles(join(dir, 'run'))
      await runFiles.reapOrphans(join(dir, 'run'))
      expect(await runningArtifacts(new Map([['1.0.0', artifact]]))).toEqual([])
    }
  }, 60_000)
})
