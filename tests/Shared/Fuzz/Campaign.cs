using System.Security.Cryptography;
using Optimum.Core;

namespace Optimum.Tests.Fuzz;

/// <summary>What a correct reader must do with a mutated input: take it (and produce what it says) or refuse it.</summary>
public enum Verdict { Valid, Invalid }

/// <summary>One mutated input: its class (for the tally), what was done, the verdict it deserves and why.</summary>
public sealed record Mutation(string Class, string What, Verdict Expected, string Why)
{
    public override string ToString() => $"[{Class}] {What} (expected {Expected}: {Why})";
}

/// <summary>
/// The tally of one fuzz campaign: every attempt runs under a time limit and ends as a clean refusal (an error the CLI prints
/// as one line, naming the file), an acceptance (which the caller verifies), a crash (any other exception), a hang, or a
/// half-written destination. Failures are collected so that one run reports all of them.
/// </summary>
public sealed class Campaign(string name)
{
    /// <summary>Long enough for a graph build on a busy 2-core machine; only a hang goes past it.</summary>
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    public string Name { get; } = name;
    public int Tried { get; private set; }
    public int Refused { get; private set; }
    public int Accepted { get; private set; }
    public int Crashed { get; private set; }
    public int Hung { get; private set; }
    public int HalfWritten { get; private set; }
    public int Misjudged { get; private set; }
    public List<string> Failures { get; } = [];
    private readonly SortedDictionary<string, int> _classes = new(StringComparer.Ordinal);

    public string Summary => $"{Name}: {Tried} inputs tried, {Refused} refused, {Accepted} accepted as valid, {Crashed} crashed, {Hung} hung, "
        + $"{HalfWritten} half-written, {Misjudged} misjudged; classes: {string.Join(", ", _classes.Select(kv => $"{kv.Key} {kv.Value}"))}";

    /// <summary>
    /// Runs <paramref name="attempt"/> for <paramref name="m"/> and judges the result: a refusal must be a clean error whose
    /// message names <paramref name="file"/> (and then <paramref name="field"/> when given) or <paramref name="orFile"/>; an acceptance must be expected and
    /// pass <paramref name="verify"/> (null or a description of what is wrong). Returns whether the input was accepted.
    /// </summary>
    public bool Attempt(Mutation m, Action attempt, string file, string? field = null, Func<string?>? verify = null, string? orFile = null)
    {
        Tried++;
        _classes[m.Class] = _classes.GetValueOrDefault(m.Class) + 1;
        var error = Run(attempt);
        switch (error)
        {
            case null:
                Accepted++;
                if (m.Expected == Verdict.Invalid) Fail(m, "accepted although invalid");
                else if (verify?.Invoke() is { } wrong) Fail(m, $"accepted but wrong: {wrong}");
                return true;
            case TimeoutException:
                Hung++;
                Failures.Add($"{m}: no answer within {Limit.TotalSeconds} s (hang)");
                return false;
            case var e when IsCleanRefusal(e):
                Refused++;
                if (m.Expected == Verdict.Valid) Fail(m, $"refused although valid: {e.Message}");
                else if (!e.Message.Contains(file, StringComparison.Ordinal) && (orFile is null || !e.Message.Contains(orFile, StringComparison.Ordinal)))
                    Fail(m, $"the message does not name {file}{(orFile is null ? "" : $" or {orFile}")}: {e.Message}");
                else if (field is not null && e.Message.Contains(file, StringComparison.Ordinal) && !e.Message.Contains(field, StringComparison.Ordinal))
                    Fail(m, $"the message does not name '{field}': {e.Message}");
                return false;
            case var e:
                Crashed++;
                Failures.Add($"{m}: CRASH {e.GetType().FullName}: {e.Message}\n{string.Join("\n", (e.StackTrace ?? "").Split('\n').Take(6))}");
                return false;
        }
    }

    private void Fail(Mutation m, string what)
    {
        Misjudged++;
        Failures.Add($"{m}: {what}");
    }

    /// <summary>A failure of the destination (files changed by a refused export, temporary folders left).</summary>
    public void HalfWrite(Mutation m, string what)
    {
        HalfWritten++;
        Failures.Add($"{m}: HALF-WRITTEN {what}");
    }

    /// <summary>An error the CLI reports in one line (see <see cref="ExpectedErrors"/>), and not one that leaks from deep code.</summary>
    public static bool IsCleanRefusal(Exception e) => ExpectedErrors.Are(e)
        && e is not (ArgumentOutOfRangeException or ArgumentNullException or ObjectDisposedException or RankException or PlatformNotSupportedException);

    /// <summary>Runs <paramref name="action"/> on its own thread; its exception, a <see cref="TimeoutException"/> past <see cref="Limit"/>, or null.</summary>
    public static Exception? Run(Action action)
    {
        var task = Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            return task.Wait(Limit) ? null : new TimeoutException();
        }
        catch (AggregateException e) { return e.InnerException ?? e; }
    }

    /// <summary>Everything under <paramref name="root"/> (relative path and SHA-256 of each file, folders marked), for before/after comparisons.</summary>
    public static string Snapshot(string root)
    {
        if (!Directory.Exists(root)) return "(absent)";
        var lines = Directory.GetFileSystemEntries(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Select(p =>
        {
            var rel = Path.GetRelativePath(root, p);
            return Directory.Exists(p) ? rel + "/" : $"{rel} {Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(p)))}";
        });
        return string.Join("\n", lines);
    }

    /// <summary>Fails the test with every failure (the first 40) and the tally.</summary>
    public void AssertClean()
    {
        if (Failures.Count == 0) return;
        throw new Xunit.Sdk.XunitException($"{Summary}\n{Failures.Count} failure(s):\n{string.Join("\n", Failures.Take(80))}");
    }
}
