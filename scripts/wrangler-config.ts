import { unstable_readConfig } from 'wrangler'
import { z } from 'zod'

/**
 * The part of a resolved wrangler config (top level or one `--env`) the deploy scripts use, read by
 * wrangler's own reader so environment resolution and inheritance are wrangler's, and parsed here:
 * wrangler's declared return type comes from a package it bundles, so it arrives untyped.
 */
export const ResolvedWranglerConfig = z.object({
  name: z.string().optional(),
  r2_buckets: z.array(z.object({ binding: z.string(), bucket_name: z.string().optional() })),
  kv_namespaces: z.array(z.object({ binding: z.string(), id: z.string().optional() })),
  durable_objects: z.object({ bindings: z.array(z.object({ name: z.string(), class_name: z.string() })) }),
  ratelimits: z.array(z.object({ name: z.string(), namespace_id: z.string() })).default([]),
  vars: z.record(z.string(), z.unknown()),
  secrets: z.object({ required: z.array(z.string()).optional() }).optional(),
})
export type ResolvedWranglerConfig = z.infer<typeof ResolvedWranglerConfig>

/** `env` undefined: the top level. An env without a section resolves to the top level (wrangler's rule). */
export function readWranglerConfig(configPath: string, env?: string): ResolvedWranglerConfig {
  const raw: unknown = unstable_readConfig(
    { config: configPath, ...(env ? { env } : {}) },
    { hideWarnings: true },
  )
  return ResolvedWranglerConfig.parse(raw)
}
