import { z } from 'zod'

/**
 * What the agent remembers of one edge origin's link between transfers (`<installRoot>/.transfer/links.json`):
 * the part of the range controller's `snapshot()` that a warm start takes as its `prior` (ADR 0007). The
 * file is the agent's own, but it is read back as external input: every number is bounded, and an entry
 * that does not parse is a cold start for that origin, never an error.
 */

/** Origins remembered at most; the most recently saved are kept. */
export const MAX_TRANSFER_LINKS = 32

/** `scheme://host:port`, the port always written out (client-agent/transfer/link-memory.ts `originOf`). */
export const TransferOrigin = z
  .string()
  .max(300)
  .regex(/^https?:\/\/[^/?#\s@]+:\d{1,5}$/)

export const TransferLink = z.object({
  origin: TransferOrigin,
  /** The controller's windowed-max delivery rate; up to 100 GB/s (no link the agent meets is faster). */
  bandwidthBytesPerSec: z.number().positive().max(1e11),
  /** Windowed-min time to first byte; a minute is beyond any link the header timeout (30 s) lets through. */
  minRttMs: z.number().nonnegative().max(60_000),
  /** The parallelism the probe cycle was centred on (the controller's `maxParallel` caps it again). */
  parallel: z.number().int().min(1).max(64),
  /** When it was saved, ms since the epoch: older than the agent's maximum age is a cold start. */
  savedAt: z.number().int().nonnegative().max(8.64e15),
})
export type TransferLink = z.infer<typeof TransferLink>

/** The file as a whole; its entries are checked one by one (TransferLink), so one bad entry costs only itself. */
export const TransferLinksFile = z.object({
  version: z.literal(1),
  links: z.array(z.unknown()).max(MAX_TRANSFER_LINKS),
})
