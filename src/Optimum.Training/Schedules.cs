using Optimum.Core;

namespace Optimum.Training;

/// <summary>The shape of the learning rate after warmup (command-line and checkpoint names: constant, linear, cosine).</summary>
public enum ScheduleKind
{
    Constant,
    Linear,
    Cosine,
}

/// <summary>
/// Learning-rate schedules as HF's get_scheduler defines them, as a function of the 0-based update
/// index: constant (linear warmup, then flat), linear (warmup, then linear decay to 0 at the last
/// step) and cosine (warmup, then half a cosine to 0).
/// </summary>
public sealed record LrSchedule(ScheduleKind Kind, double Lr, long WarmupSteps, long TotalSteps)
{
    public void Validate()
    {
        if (!Enum.IsDefined(Kind)) throw new ArgumentException($"Schedule {(int)Kind} is not one of {string.Join(", ", EnumNames.Names<ScheduleKind>())}.");
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
            ScheduleKind.Constant => Lr,
            ScheduleKind.Linear => Lr * Math.Max(0, 1 - progress),
            _ => Lr * Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * progress))),
        };
    }
}
