/**
 * predict/: pure forecasting, placement and scoring. No I/O, no clocks, no global randomness: callers pass
 * `now` and an `Rng`, so the same code runs in Durable Objects and in deterministic Node simulations.
 */
export * from './access-model.ts'
export * from './decay.ts'
export * from './hashing.ts'
export * from './holt-winters.ts'
export * from './optimize.ts'
export * from './prefetch-scoring.ts'
export * from './random.ts'
export * from './shard-feedback.ts'
export * from './shard-plan.ts'
export * from './stats.ts'
