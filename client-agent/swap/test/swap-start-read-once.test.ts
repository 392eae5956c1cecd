import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { SwapJournal } from '../journal.ts'
import type { SupervisorEvent } from '../supervisor.ts'
import { cleanup, supervise, tempDir } from './harness.ts'

/**
 * At start, a journaled write whose body does not fit `memoryBytes` stays in the journal. It is read
 * back once, when the replay sends it, and validated on those bytes: not once to validate and again to
 * send. The journal's read-back is counted with a spy around the real method.
 */
afterAll(cleanup)
afterEach(() => {
  vi.restoreAllMocks()
})

const SIZE = 300 * 1024
const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex')
const body = (id: number) => Buffer.alloc(SIZE, id)

describe('buffered swap: journaled bodies at start', () => {
  it('reads each body past memoryBytes back once, validates and sends those bytes', async () => {
    const dir = await tempDir('deltaport-swap-read-once-')
    const journal = new SwapJournal(join(dir, 'run', 'swap.journal'))
    await journal.open()
    for (const id of [1, 2, 3, 4]) {
      await journal.append({
        t: 'w',
        id,
        client: `c${id}`,
        method: 'POST',
        path: `/write/${id}`,
        // Write 3 lacks the header the validation requires: it must be refused, never sent.
        headers: id === 3 ? [] : [['x-auth', 'yes']],
        body: body(id).toString('base64'),
        at: Date.now(),
      })
    }
    await journal.close()
    const artifact = join(dir, 'service.mjs')
    await import('node:fs/promises').then(({ writeFile }) =>
      writeFile(
        artifact,
        `import { createServer } from 'node:http'
import { createHash } from 'node:crypto'
import { appendFileSync } from 'node:fs'
const server = createServer((req, res) => {
  const hash = createHash('sha256')
  let length = 0
  req.on('data', (chunk) => { hash.update(chunk); length += chunk.length })
  req.on('end', () => {
    if (req.url !== '/health') appendFileSync(process.env.DELTAPORT_DATA_DIR + '/applied.log', req.url + ' ' + length + ' ' + hash.digest('hex') + '\\n')
    res.end('ok')
  })
})
process.on('SIGTERM', () => process.exit(0))
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
      ),
    )
    const reads = vi.spyOn(SwapJournal.prototype, 'readBody')
    const events: SupervisorEvent[] = []
    // Started: the journal has been replayed before the port opens.
    const supervisor = await supervise(
      dir,
      artifact,
      { memoryBytes: 256 * 1024, requiredHeader: 'x-auth' },
      events,
    )
    try {
      const applied = (await readFile(join(dir, 'data', 'applied.log'), 'utf8')).trim().split('\n').sort()
      expect(applied).toEqual([1, 2, 4].map((id) => `/write/${id} ${SIZE} ${sha(body(id))}`))
      // One read per journaled body (none fits 256 KiB), the refused one included.
      const offsets = reads.mock.calls.map(([at]) => at.offset)
      expect(offsets).toHaveLength(4)
      expect(new Set(offsets).size).toBe(4)
    } finally {
      await supervisor.stop()
    }
  }, 60_000)
})
