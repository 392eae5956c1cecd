/**
 * Recovers a journal and reports how far memory rose doing it (journal-memory.test.ts). Usage:
 * node --expose-gc journal-memory-child.ts <journal path> <memoryBytes> <body size>. Opens the journal the way the
 * supervisor does, restores the pending writes into a WriteBuffer and validates every one as the replay does
 * (reading the bodies not kept in memory back from the journal, one at a time), sampling the live heap and
 * ArrayBuffers (where file reads land) every 2 ms. Prints one JSON line.
 */
import { SwapSettings } from '../../../schemas/swap.ts'
import { WriteBuffer } from '../buffer.ts'
import { SwapJournal } from '../journal.ts'

const [path, memory, size] = process.argv.slice(2)
const gc = (globalThis as { gc?: () => void }).gc
if (path && memory && size && gc) {
  const used = () => {
    const m = process.memoryUsage()
    return m.heapUsed + m.arrayBuffers
  }
  gc()
  const base = used()
  let peak = base
  // Collected before each sample: what is measured is what recovery holds, not garbage (each frame's
  // strings) that V8 has not got round to collecting yet.
  const sampler = setInterval(() => {
    gc()
    peak = Math.max(peak, used())
  }, 2)
  const journal = new SwapJournal(path)
  const settings = SwapSettings.parse({ memoryBytes: Number(memory) })
  const recovered = await journal.open({ bodyBytes: settings.memoryBytes })
  peak = Math.max(peak, used())
  // Every body is `id % 251` repeated (journal-memory.test.ts): a body read back wrong is refused.
  const validator = (r: { path: string; body: Uint8Array }) => {
    const id = Number(r.path.slice(1))
    return r.body.length === Number(size) && r.body.every((b) => b === id % 251)
  }
  const buffer = new WriteBuffer(settings, journal, validator, recovered.lastId)
  buffer.restore(recovered.pending)
  const count = recovered.pending.length
  recovered.pending.length = 0
  // Checked as the replay checks them: a body kept in memory was validated by `restore`, the others are
  // read back from the journal and validated one at a time (the bytes the replay then sends).
  const verdicts = []
  for (const entry of [...buffer.clientQueues.values()].flat())
    verdicts.push(entry.unchecked ? (await buffer.readAndCheck(entry)).verdict : await entry.verdict)
  gc()
  peak = Math.max(peak, used())
  clearInterval(sampler)
  await journal.close()
  process.stdout.write(
    `${JSON.stringify({ count, ok: verdicts.every((v) => v.ok), stats: buffer.stats(), growth: peak - base })}\n`,
  )
}
