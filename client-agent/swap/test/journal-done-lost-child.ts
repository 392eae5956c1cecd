/**
 * Holds a write under a file size limit (journal-done-lost.test.ts runs it with `ulimit -f`, 64 KiB)
 * whose record ends a few bytes short of the limit, so the `done` record of its answer cannot be
 * written (EFBIG). Prints one JSON line: whether `complete` resolved and what the client heard.
 */
import { SwapSettings } from '../../../schemas/swap.ts'
import { WriteBuffer } from '../buffer.ts'
import { SwapJournal } from '../journal.ts'

const [path] = process.argv.slice(2)
if (path) {
  const journal = new SwapJournal(path)
  await journal.open()
  const buffer = new WriteBuffer(SwapSettings.parse({ writeAhead: true }), journal, null)
  const heard: Array<{ status: number; body: string }> = []
  const responder = {
    send: (status: number, _headers: unknown, body: Uint8Array) =>
      void heard.push({ status, body: Buffer.from(body).toString() }),
    gone: false,
  }
  // The frame: 8 bytes of header and the record's JSON; the body is sized so the file ends 10 bytes
  // short of 65 536, too little for any `done` record.
  const request = (size: number) => ({
    method: 'POST',
    path: '/w',
    headers: [] as Array<[string, string]>,
    body: Buffer.alloc(size, 1),
    client: 'c',
  })
  const probe = JSON.stringify({
    t: 'w',
    id: 1,
    client: 'c',
    method: 'POST',
    path: '/w',
    headers: [],
    body: '',
    at: Date.now(),
  })
  const room = 65_536 - 10 - 8 - probe.length
  const held = await buffer.hold(request(Math.floor(room / 4) * 3), responder)
  const completed = await buffer.complete(held, 201, [], Buffer.from('applied')).then(
    () => 'resolved',
    (error: Error) => `rejected ${error.message}`,
  )
  process.stdout.write(`${JSON.stringify({ completed, heard, stats: buffer.stats() })}\n`)
  await journal.close().catch(() => undefined)
}
