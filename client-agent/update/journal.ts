import { readFile, rm } from 'node:fs/promises'
import { z } from 'zod'
import { Sha256Hex } from '../../schemas/common.ts'
import { writeFileAtomic } from '../fs/atomic.ts'

/**
 * What a stream download has made durable, rewritten atomically after each fsync of the payload file.
 * After `kill -9` the payload file may hold more than this says (a group half written); the journal is
 * the truth and the file is cut back to it.
 */
export const StreamJournal = z.object({
  url: z.string().max(2048),
  payloadSha256: Sha256Hex,
  groupsDone: z.number().int().nonnegative(),
  bytesDone: z.number().int().nonnegative(),
})
export type StreamJournal = z.infer<typeof StreamJournal>

export async function readJournal(path: string): Promise<StreamJournal | null> {
  try {
    const parsed = StreamJournal.safeParse(JSON.parse(await readFile(path, 'utf8')))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}

export function writeJournal(path: string, journal: StreamJournal): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(journal))
}

export async function clearJournal(path: string): Promise<void> {
  await rm(path, { force: true })
}
