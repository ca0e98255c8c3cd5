using Optimum.Core.Diffusion;

namespace Optimum.Inference.Diffusion;

/// <summary>The sampling scheduler of an image generation.</summary>
public enum SamplerKind
{
    /// <summary>diffusers' DDIMScheduler (deterministic at eta 0).</summary>
    Ddim,
    /// <summary>diffusers' DDPMScheduler (ancestral sampling with the fixed_small variance).</summary>
    Ddpm,
}

/// <summary>
/// One sampling run's walk through a noise schedule, as a diffusers scheduler after <c>set_timesteps(steps)</c>:
/// the timesteps (descending, "leading" spacing plus steps_offset) and the update from x_t to x_prev given the
/// model's predicted noise. Immutable; one instance may step many samples at once from several threads.
/// </summary>
public abstract class DiffusionScheduler
{
    private readonly long[] _timesteps;

    protected DiffusionScheduler(SchedulerConfig config, int steps)
    {
        config.Validate();
        if (steps < 1 || steps > config.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps, $"Sampling takes 1..{config.NumTrainTimesteps} steps (num_train_timesteps).");
        Config = config;
        Schedule = config.Build();
        StepCount = steps;
        _timesteps = LeadingTimesteps(config.NumTrainTimesteps, steps, config.StepsOffset);
        if (_timesteps[0] >= config.NumTrainTimesteps)
            throw new ArgumentException($"steps_offset {config.StepsOffset} with {steps} steps puts the first timestep at {_timesteps[0]}, past the schedule's last ({config.NumTrainTimesteps - 1}); use fewer steps.", nameof(steps));
    }

    /// <summary>
    /// diffusers' "leading" spacing: k·(T / steps) + offset for k = steps − 1 … 0 (10 of 1,000: 900, 800, …, 0).
    /// </summary>
    public static long[] LeadingTimesteps(int trainSteps, int steps, int stepsOffset = 0)
    {
        if (steps < 1 || steps > trainSteps) throw new ArgumentOutOfRangeException(nameof(steps), steps, $"Sampling takes 1..{trainSteps} steps (num_train_timesteps).");
        long ratio = trainSteps / steps;
        return Enumerable.Range(0, steps).Select(k => (long)(steps - 1 - k) * ratio + stepsOffset).ToArray();
    }

    /// <summary>A DDIM (with <paramref name="eta"/>) or DDPM scheduler over <paramref name="config"/>'s schedule.</summary>
    public static DiffusionScheduler Create(SamplerKind kind, SchedulerConfig config, int steps, double eta = 0) => kind switch
    {
        SamplerKind.Ddim => new DdimScheduler(config, steps, eta),
        SamplerKind.Ddpm => eta == 0 ? new DdpmScheduler(config, steps)
            : throw new ArgumentException($"eta {eta} is a DDIM setting; DDPM's noise is fixed by its variance (use eta 0 or the ddim scheduler).", nameof(eta)),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    public SchedulerConfig Config { get; }
    public NoiseSchedule Schedule { get; }
    public int StepCount { get; }
    /// <summary>The timesteps of the run, descending.</summary>
    public IReadOnlyList<long> Timesteps => _timesteps;

    /// <summary>Whether step <paramref name="index"/> adds noise (reads its <c>noise</c> argument).</summary>
    public abstract bool AddsNoise(int index);

    /// <summary>
    /// Step <paramref name="index"/> (timestep <see cref="Timesteps"/>[index]) of one or more samples: writes x_prev into
    /// <paramref name="result"/> (which may be <paramref name="x"/> itself). <paramref name="noise"/> holds standard normal
    /// values of the same length, read only when <see cref="AddsNoise"/> says so (else it may be empty).
    /// </summary>
    public void Step(int index, ReadOnlySpan<float> x, ReadOnlySpan<float> eps, ReadOnlySpan<float> noise, Span<float> result)
    {
        if ((uint)index >= (uint)_timesteps.Length) throw new ArgumentOutOfRangeException(nameof(index), index, $"The run has {_timesteps.Length} steps.");
        if (x.Length != eps.Length || result.Length != x.Length)
            throw new ArgumentException($"{x.Length} sample values, {eps.Length} predicted noise values and {result.Length} result values differ.");
        if (AddsNoise(index) && noise.Length != x.Length)
            throw new ArgumentException($"Step {index} (timestep {_timesteps[index]}) adds noise: it needs {x.Length} noise values, got {noise.Length}.", nameof(noise));
        StepCore(index, x, eps, noise, result);
    }

    protected abstract void StepCore(int index, ReadOnlySpan<float> x, ReadOnlySpan<float> eps, ReadOnlySpan<float> noise, Span<float> result);

    /// <summary>x̂₀ = (x_t − √(1 − ᾱ_t)·ε) / √ᾱ_t, clamped to ±clip_sample_range when clip_sample is set.</summary>
    protected float PredictOriginal(float x, float eps, float sqrtBetaProd, float sqrtAlphaProd, float clip)
    {
        float x0 = (x - sqrtBetaProd * eps) / sqrtAlphaProd;
        return Config.ClipSample ? Math.Clamp(x0, -clip, clip) : x0;
    }
}

/// <summary>
/// diffusers' DDIMScheduler.step for epsilon prediction (float32, as torch): with prev = t − T/steps and
/// ᾱ_prev = ᾱ[prev], or after the last step 1 (set_alpha_to_one) else ᾱ[0],
/// x̂₀ = (x_t − √(1 − ᾱ_t)·ε) / √ᾱ_t (clipped), σ_t = eta·√((1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev)),
/// x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ_t²)·ε + σ_t·z with z standard normal (the model's own ε in the direction term).
/// </summary>
public sealed class DdimScheduler : DiffusionScheduler
{
    public DdimScheduler(SchedulerConfig config, int steps, double eta = 0) : base(config, steps)
    {
        // Beyond 1, σ_t² can exceed 1 − ᾱ_prev and the direction term's square root turns NaN.
        if (!(eta is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(eta), eta, "eta must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like noise).");
        Eta = eta;
    }

    public double Eta { get; }

    /// <summary>diffusers' prev_timestep = t − T / steps (negative after the last step).</summary>
    public long PreviousTimestep(long t) => t - Config.NumTrainTimesteps / StepCount;

    /// <summary>ᾱ of a timestep, and of "before the first" (negative): 1 with set_alpha_to_one, else ᾱ_0.</summary>
    public float AlphaProd(long t) => t >= 0 ? Schedule.AlphasCumprod[(int)t] : Config.SetAlphaToOne ? 1f : Schedule.AlphasCumprod[0];

    /// <summary>DDIM's variance (1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev) of step <paramref name="index"/>; σ_t = eta·√variance.</summary>
    public float Variance(int index)
    {
        long t = Timesteps[index];
        float a = AlphaProd(t), aPrev = AlphaProd(PreviousTimestep(t));
        return (1f - aPrev) / (1f - a) * (1f - a / aPrev);
    }

    /// <summary>σ_t of step <paramref name="index"/>: the standard deviation of the noise it adds.</summary>
    public float Sigma(int index) => (float)Eta * MathF.Sqrt(Variance(index));

    public override bool AddsNoise(int index) => Eta > 0;

    protected override void StepCore(int index, ReadOnlySpan<float> x, ReadOnlySpan<float> eps, ReadOnlySpan<float> noise, Span<float> result)
    {
        long t = Timesteps[index];
        Update(x, eps, Eta > 0 ? noise : default, result, AlphaProd(t), AlphaProd(PreviousTimestep(t)), Sigma(index), Config.ClipSample ? (float)Config.ClipSampleRange : null);
    }

    /// <summary>The DDIM update between ᾱ_t = <paramref name="a"/> and ᾱ_prev = <paramref name="aPrev"/> with noise σ (none when <paramref name="noise"/> is empty).</summary>
    internal static void Update(ReadOnlySpan<float> x, ReadOnlySpan<float> eps, ReadOnlySpan<float> noise, Span<float> result, float a, float aPrev, float sigma, float? clip)
    {
        float sa = MathF.Sqrt(a), sb = MathF.Sqrt(1f - a), saPrev = MathF.Sqrt(aPrev), dir = MathF.Sqrt(1f - aPrev - sigma * sigma);
        bool noisy = !noise.IsEmpty;
        for (int i = 0; i < x.Length; i++)
        {
            float x0 = (x[i] - sb * eps[i]) / sa;
            if (clip is { } c) x0 = Math.Clamp(x0, -c, c);
            float prev = saPrev * x0 + dir * eps[i];
            result[i] = noisy ? prev + sigma * noise[i] : prev;
        }
    }
}

/// <summary>
/// diffusers' DDPMScheduler.step for epsilon prediction and variance_type fixed_small (float32, as torch): with prev
/// the next timestep of the run (−1 after the last, ᾱ_prev = 1), α_t = ᾱ_t/ᾱ_prev and β_t = 1 − α_t (the step's own
/// beta, so fewer steps than training stay a valid chain),
/// x̂₀ = (x_t − √(1 − ᾱ_t)·ε) / √ᾱ_t (clipped), μ = √ᾱ_prev·β_t/(1 − ᾱ_t)·x̂₀ + √α_t·(1 − ᾱ_prev)/(1 − ᾱ_t)·x_t,
/// x_prev = μ + √β̃·z with β̃ = max((1 − ᾱ_prev)/(1 − ᾱ_t)·β_t, 1e−20) when t > 0 (no noise at t = 0).
/// </summary>
public sealed class DdpmScheduler : DiffusionScheduler
{
    public DdpmScheduler(SchedulerConfig config, int steps) : base(config, steps) { }

    /// <summary>The next timestep of the run after step <paramref name="index"/>, −1 after the last (diffusers' previous_timestep).</summary>
    public long PreviousTimestep(int index) => index + 1 < Timesteps.Count ? Timesteps[index + 1] : -1;

    /// <summary>The posterior variance β̃ of step <paramref name="index"/> (fixed_small, clamped at 1e−20).</summary>
    public float Variance(int index)
    {
        var (a, aPrev) = Alphas(index);
        return MathF.Max((1f - aPrev) / (1f - a) * (1f - a / aPrev), 1e-20f);
    }

    /// <summary>The coefficients of x̂₀ and x_t in the posterior mean μ of step <paramref name="index"/>.</summary>
    public (float Original, float Current) MeanCoefficients(int index)
    {
        var (a, aPrev) = Alphas(index);
        float alpha = a / aPrev, beta = 1f - alpha;
        return (MathF.Sqrt(aPrev) * beta / (1f - a), MathF.Sqrt(alpha) * (1f - aPrev) / (1f - a));
    }

    private (float A, float APrev) Alphas(int index)
    {
        long prev = PreviousTimestep(index);
        return (Schedule.AlphasCumprod[(int)Timesteps[index]], prev >= 0 ? Schedule.AlphasCumprod[(int)prev] : 1f);
    }

    public override bool AddsNoise(int index) => Timesteps[index] > 0;

    protected override void StepCore(int index, ReadOnlySpan<float> x, ReadOnlySpan<float> eps, ReadOnlySpan<float> noise, Span<float> result)
    {
        var (a, _) = Alphas(index);
        var (c0, ct) = MeanCoefficients(index);
        float sa = MathF.Sqrt(a), sb = MathF.Sqrt(1f - a), clip = (float)Config.ClipSampleRange;
        bool noisy = AddsNoise(index);
        float std = noisy ? MathF.Sqrt(Variance(index)) : 0f;
        for (int i = 0; i < x.Length; i++)
        {
            float x0 = PredictOriginal(x[i], eps[i], sb, sa, clip);
            float mean = c0 * x0 + ct * x[i];
            result[i] = noisy ? mean + std * noise[i] : mean;
        }
    }
}
