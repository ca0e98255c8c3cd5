namespace Optimum.Training;

/// <summary>
/// Deliberate failures for testing how a multi-rank job fails, read from the environment variable
/// <c>OPTIMUM_FAULT_INJECT</c>: <c>rank=R,step=S</c> makes rank R throw when it starts update S;
/// <c>rank=R,checkpoint</c> makes it throw while a checkpoint is being written. Unset, nothing happens.
/// </summary>
public static class FaultInjection
{
    private static readonly Dictionary<string, string> Spec = Parse(Environment.GetEnvironmentVariable("OPTIMUM_FAULT_INJECT"));

    private static Dictionary<string, string> Parse(string? s) => (s ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)
        .Select(p => p.Split('=', 2)).ToDictionary(p => p[0].Trim(), p => p.Length > 1 ? p[1].Trim() : "");

    private static bool ForRank(int rank) => Spec.TryGetValue("rank", out var r) && r == rank.ToString(System.Globalization.CultureInfo.InvariantCulture);

    public static void AtStep(int rank, long step)
    {
        if (ForRank(rank) && Spec.TryGetValue("step", out var s) && s == step.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw new InvalidOperationException($"fault injected at step {step} (OPTIMUM_FAULT_INJECT)");
    }

    public static void AtCheckpoint(int rank)
    {
        if (ForRank(rank) && Spec.ContainsKey("checkpoint"))
            throw new InvalidOperationException("fault injected while writing a checkpoint (OPTIMUM_FAULT_INJECT)");
    }
}
