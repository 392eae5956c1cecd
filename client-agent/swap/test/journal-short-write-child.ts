/**
 * Appends to a journal under a file size limit (journal-short-write.test.ts runs it with `ulimit -f`):
 * a small write, one whose frame crosses the limit (the kernel writes part of it, then refuses), and a
 * small one after. Prints one JSON line: which appends resolved (claimed durable) and which rejected.
 */
import { SwapJournal } from '../journal.ts'

const [path] = process.argv.slice(2)
if (path) {
  const journal = new SwapJournal(path)
  await journal.open()
  const write = (id: number, size: number) => ({
    t: 'w' as const,
    id,
    client: 'c',
    method: 'POST',
    path: `/${id}`,
    headers: [],
    body: Buffer.alloc(size, id).toString('base64'),
    at: id,
  })
  const outcome: Record<string, string> = {}
  for (const [id, size] of [
    [1, 10_000],
    [2, 60_000],
    [3, 1_000],
  ] as const) {
    outcome[id] = await journal.append(write(id, size)).then(
      () => 'durable',
      (error: NodeJS.ErrnoException) => `rejected ${error.code ?? error.message}`,
    )
  }
  await journal.close()
  process.stdout.write(`${JSON.stringify(outcome)}\n`)
}
