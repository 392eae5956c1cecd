/**
 * Derivative-free minimisation for fitting a handful of smoothing parameters. Nelder-Mead suits this:
 * the one-step-ahead error surface of Holt-Winters is cheap to evaluate, low dimensional (3-4 params),
 * and has no usable gradient in closed form.
 */

export interface Bounds {
  lower: readonly number[]
  upper: readonly number[]
}

export interface NelderMeadOptions {
  maxIterations?: number
  /** Stop when the spread of objective values across the simplex falls below this. */
  tolerance?: number
  /** Initial simplex edge as a fraction of each parameter's range. */
  step?: number
}

export interface Minimum {
  x: number[]
  value: number
  iterations: number
}

/**
 * Box-constrained Nelder-Mead. Constraints are enforced by clamping every trial point into the box, which
 * keeps the simplex valid without a penalty term that would distort the error surface near the edges.
 * Deterministic: same inputs, same path.
 */
export function nelderMead(
  objective: (x: readonly number[]) => number,
  start: readonly number[],
  bounds: Bounds,
  options: NelderMeadOptions = {},
): Minimum {
  const dim = start.length
  const maxIterations = options.maxIterations ?? 200 * dim
  const tolerance = options.tolerance ?? 1e-8
  const step = options.step ?? 0.1
  const clamp = (x: readonly number[]): number[] =>
    x.map((v, i) => Math.min(bounds.upper[i]!, Math.max(bounds.lower[i]!, v)))
  const evaluate = (x: number[]): { x: number[]; f: number } => {
    const f = objective(x)
    // A NaN objective (diverging recursion) must lose every comparison rather than poison the sort.
    return { x, f: Number.isFinite(f) ? f : Number.POSITIVE_INFINITY }
  }

  const simplex = [evaluate(clamp(start))]
  for (let i = 0; i < dim; i++) {
    const p = [...start]
    const range = bounds.upper[i]! - bounds.lower[i]!
    // Step inwards when the start sits on the upper edge, or the vertex would collapse onto the start.
    p[i] = p[i]! + step * range <= bounds.upper[i]! ? p[i]! + step * range : p[i]! - step * range
    simplex.push(evaluate(clamp(p)))
  }

  let iterations = 0
  for (; iterations < maxIterations; iterations++) {
    simplex.sort((a, b) => a.f - b.f)
    const best = simplex[0]!
    const worst = simplex[dim]!
    if (Math.abs(worst.f - best.f) <= tolerance * (Math.abs(best.f) + tolerance)) break

    const centroid = new Array<number>(dim).fill(0)
    for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) centroid[j]! += simplex[i]!.x[j]! / dim
    const along = (t: number) => evaluate(clamp(centroid.map((c, j) => c + t * (worst.x[j]! - c))))

    const reflected = along(-1)
    if (reflected.f < best.f) {
      const expanded = along(-2)
      simplex[dim] = expanded.f < reflected.f ? expanded : reflected
    } else if (reflected.f < simplex[dim - 1]!.f) {
      simplex[dim] = reflected
    } else {
      const contracted = reflected.f < worst.f ? along(-0.5) : along(0.5)
      if (contracted.f < Math.min(worst.f, reflected.f)) {
        simplex[dim] = contracted
      } else {
        // Shrink everything towards the best vertex.
        for (let i = 1; i <= dim; i++) {
          simplex[i] = evaluate(clamp(simplex[i]!.x.map((v, j) => best.x[j]! + 0.5 * (v - best.x[j]!))))
        }
      }
    }
  }
  simplex.sort((a, b) => a.f - b.f)
  return { x: simplex[0]!.x, value: simplex[0]!.f, iterations }
}
