/**
 * A journal writer for the crash test (journal-crash.test.ts): it keeps appending held writes, settling
 * some, and compacting, until it is killed. Usage: node journal-crash-child.ts <journal path>.
 * Prints `W <id>` once a write's record is durable, `D <id>` before its `d` record is asked for and
 * `S <id>` once that is durable (pipes are synchronous on Linux: a printed line was sent before the
 * next step). Every body is `bodyOf(id)`, so the test can check what a recovered record holds.
 */
import type { JournalWrite } from '../../../schemas/swap.ts'
import { SwapJournal } from '../journal.ts'

export function bodyOf(id: number): string {
  // Every fifth write is large, so a compaction copies enough to be caught mid-copy.
  return `${id}:`.padEnd(id % 5 === 0 ? 256 * 1024 : 64, String.fromCharCode(97 + (id % 26)))
}

const path = process.argv[2]
if (path) {
  const journal = new SwapJournal(path)
  const recovered = await journal.open()
  const owed = recovered.pending.map((w) => w.id)
  let next = recovered.lastId + 1
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const write = (id: number): JournalWrite => ({
    t: 'w',
    id,
    client: `c${id % 3}`,
    method: 'POST',
    path: '/write',
    headers: [],
    body: Buffer.from(bodyOf(id)).toString('base64'),
    at: Date.now(),
  })
  const settle = async (id: number) => {
    say(`D ${id}`)
    await journal.append({ t: 'd', id, status: 200 })
    say(`S ${id}`)
  }
  for (;;) {
    const ids = [next++, next++, next++, next++, next++]
    // Group-committed together, as concurrent holds are.
    await Promise.all(
      ids.map(async (id) => {
        await journal.append(write(id))
        say(`W ${id}`)
      }),
    )
    owed.push(...ids)
    // Settle most of what is owed (a few stay held across compactions), some while compacting.
    const settling = owed.splice(0, Math.max(0, owed.length - 3))
    const half = settling.splice(0, settling.length >> 1)
    await Promise.all(half.map(settle))
    await Promise.all([journal.compact(), ...settling.map(settle)])
  }
}
