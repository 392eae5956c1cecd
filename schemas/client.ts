import { z } from 'zod'
import { ArtifactName, ByteSize, Version } from './common.ts'

/** Opaque, stable per device; chosen by the agent, never derived from personal data. */
export const ClientId = z
  .string()
  .min(8)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/)
export type ClientId = z.infer<typeof ClientId>

export const RegionName = z
  .string()
  .min(2)
  .max(16)
  .regex(/^[a-z0-9-]+$/)

/**
 * What the edge makes of a region an operator wrote in the runtime config (`regions.map` values,
 * `regions.fallback`): the name lower-cased, or null when it is not a region name and is skipped.
 */
export function operatorRegion(value: string | undefined): string | null {
  const parsed = RegionName.safeParse(value?.toLowerCase())
  return parsed.success ? parsed.data : null
}

/** What a device tells the edge about itself when it asks for a plan or a prefetch queue. */
export const ClientConfiguration = z.object({
  clientId: ClientId,
  region: RegionName.optional(),
  hardware: z.object({
    cpuCores: z.number().int().min(1).max(1024),
    memoryBytes: ByteSize,
    /** The agent's current estimate of its downlink, bytes per second. */
    bandwidthBps: z.number().nonnegative().max(1e12).optional(),
    metered: z.boolean().default(false),
  }),
  installed: z.array(z.object({ name: ArtifactName, version: Version })).max(1024),
})
export type ClientConfiguration = z.infer<typeof ClientConfiguration>
