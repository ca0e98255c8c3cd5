namespace Optimum.Training;

/// <summary>
/// Learning-rate schedules as HF's get_scheduler defines them, as a function of the 0-based update
/// index: constant (linear warmup, then flat), linear (warmup, then linear decay to 0 at the last
/// step) and cosine (warmup, then half a cosine to 0).
/// </summary>
public sealed record LrSchedule(string Kind, double Lr, long WarmupSteps, long TotalSteps)
{
    public static readonly IReadOnlyList<string> Kinds = ["constant", "linear", "cosine"];

    public void Validate()
    {
        if (!Kinds.Contains(Kind)) throw new ArgumentException($"Schedule '{Kind}' is not one of {string.Join(", ", Kinds)}.");
        if (Lr <= 0 || !double.IsFinite(Lr)) throw new ArgumentException($"Learning rate must be positive, got {Lr}.");
        if (WarmupSteps < 0 || TotalSteps < 1 || WarmupSteps > TotalSteps)
            throw new ArgumentException($"Warmup {WarmupSteps} must be in [0, total steps {TotalSteps}].");
    }

    /// <summary>The learning rate of update <paramref name="step"/> (0-based).</summary>
    public double At(long step)
    {
        if (step < WarmupSteps) return Lr * step / Math.Max(1, WarmupSteps);
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        return Kind switch
        {
            "constant" => Lr,
            "linear" => Lr * Math.Max(0, 1 - progress),
            _ => Lr * Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * progress))),
        };
    }
}
