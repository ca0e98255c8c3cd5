using Xunit;

namespace Optimum.Inference.Tests;

/// <summary>
/// A running request that other requests join: its token callback (on the scheduler's thread) holds the batch at its
/// <c>holdAt</c>-th token until <c>joiners</c> requests are queued (at most 30 s), so that sharing a step does not depend
/// on how fast the machine runs a tiny model. Shared by the GPT-2 and T5 scheduler tests.
/// </summary>
internal static class BatchAnchor
{
    /// <summary>Starts the anchor and returns once it has produced its first token (its task, for its result).</summary>
    public static async Task<Task<GenerationResult>> Start(BatchScheduler s, int[] prompt, GenerationOptions options, int holdAt, int joiners)
    {
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);   // set from every token: nothing to dispose
        var anchor = Task.Run(() => s.Generate(prompt, options, (_, tokens) =>
        {
            running.TrySetResult();
            var until = DateTime.UtcNow.AddSeconds(30);
            while (tokens.Count == holdAt && s.Waiting < joiners && DateTime.UtcNow < until) Thread.Sleep(1);
            return true;
        }));
        await Task.WhenAny(running.Task, anchor, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(running.Task.IsCompleted || anchor.IsFaulted, "the running request produced no token");
        if (anchor.IsFaulted) await anchor;
        return anchor;
    }
}
