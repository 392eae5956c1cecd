/**
 * Recovers a journal holding one frame of about 96 MiB and reports how far memory rose in each step
 * (journal-large-frame.test.ts). Usage: node --expose-gc journal-large-frame-child.ts <journal path>
 * <memoryBytes>. Steps, as the supervisor runs them: `open` (the scan, the way `Supervisor.start` opens
 * it, and `WriteBuffer.restore`), `send` (the replay's read of the large body: the bytes it sends), `compact` (after the first write is settled, the large frame is copied).
 * The live heap and ArrayBuffers (where file reads land) are sampled every 2 ms after a collection.
 * Prints one JSON line.
 */
import { SwapSettings } from '../../../schemas/swap.ts'
import { WriteBuffer } from '../buffer.ts'
import { SwapJournal } from '../journal.ts'

const [path, memory] = process.argv.slice(2)
const gc = (globalThis as { gc?: () => void }).gc
if (path && memory && gc) {
  const used = () => {
    const m = process.memoryUsage()
    return m.heapUsed + m.arrayBuffers
  }
  let base = 0
  let peak = 0
  const sampler = setInterval(() => {
    gc()
    peak = Math.max(peak, used())
  }, 2)
  const begin = () => {
    gc()
    base = used()
    peak = base
  }
  const growth = () => {
    peak = Math.max(peak, used())
    return peak - base
  }
  const journal = new SwapJournal(path)
  const settings = SwapSettings.parse({ memoryBytes: Number(memory) })
  // The large body is 72 MiB of `7` (journal-large-frame.test.ts).
  const intact = (body: Uint8Array) => body.length === 72 * 1024 * 1024 && body.every((b) => b === 7)

  begin()
  const recovered = await journal.open({ bodyBytes: settings.memoryBytes })
  const buffer = new WriteBuffer(settings, journal, null, recovered.lastId)
  buffer.restore(recovered.pending)
  const pending = recovered.pending.map((w) => ({ id: w.id, size: w.size, inMemory: w.body !== null }))
  recovered.pending.length = 0
  const open = growth()

  const held = [...buffer.clientQueues.values()].flat()
  const large = held.find((e) => e.path === '/large')!
  begin()
  let body: Uint8Array | null = await buffer.bodyOf(large)
  const send = growth()
  const ok = intact(body)
  body = null

  begin()
  await buffer.complete(held.find((e) => e.path !== '/large')!, 200, [], Buffer.alloc(0))
  await journal.compact()
  const compact = growth()
  clearInterval(sampler)
  // Still there after the copy, with its body whole.
  const okAfterCompaction = intact(await buffer.bodyOf(large))
  await journal.close()
  process.stdout.write(
    `${JSON.stringify({ pending, ok, okAfterCompaction, growth: { open, send, compact } })}\n`,
  )
}
