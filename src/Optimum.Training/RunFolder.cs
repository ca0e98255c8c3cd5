using Optimum.Distributed;

namespace Optimum.Training;

/// <summary>
/// A run's claim on its output folder. An exclusive lock on <c>OutputDir/.train.lock</c> keeps a second run out for as
/// long as the claim is held: it is an OS file lock (flock on Linux), which the kernel drops when the process ends,
/// however it ends, so a killed run never blocks the next one (the lock file itself stays; it is never deleted, as a
/// second run may be opening it). A new run (no <see cref="TrainerOptions.Resume"/>) refuses a folder that holds another
/// run's checkpoints or metrics.jsonl, so their steps never mix and <c>--resume latest</c> never finds a stale run,
/// unless <see cref="TrainerOptions.Overwrite"/> starts over by deleting them. Rank 0 holds the lock; every rank gets
/// the verdict before anything is written. Dispose releases the lock.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockFile = ".train.lock";
    public const string MetricsFile = "metrics.jsonl";
    /// <summary>What a run writes into its output folder, and what <see cref="TrainerOptions.Overwrite"/> deletes (nothing else).</summary>
    public static readonly IReadOnlyList<string> RunOutputs = ["checkpoints", MetricsFile, "loss.png", "final", "hf", LoraRun.AdapterFolderName, LoraRun.ModelFolderName];

    private FileStream? _lock;

    private RunFolder(FileStream? held) => _lock = held;

    /// <summary>
    /// Claims <paramref name="options"/>.OutputDir for a run (every rank calls it; rank 0 takes the lock). A folder
    /// another run holds, or a new run into a folder with another run's checkpoints or metrics, is refused with a
    /// <see cref="RunFolderException"/> on every rank; with Overwrite the earlier run's outputs are deleted first.
    /// <paramref name="log"/> receives what was deleted. The caller disposes the result at the end of the run.
    /// </summary>
    public static RunFolder Claim(TrainerOptions options, ICommunicator? comm = null, Action<string>? log = null)
    {
        options.Validate();
        comm ??= new SingleProcess();
        FileStream? held = null;
        RunFolderException? refusal = null;
        if (comm.Rank == 0)
        {
            try
            {
                held = Lock(options.OutputDir);
                if (options.Resume is null) StartFresh(options, log);
            }
            catch (Exception e)
            {
                held?.Dispose();
                held = null;
                if (e is not RunFolderException r) throw;
                refusal = r;
            }
        }
        bool refused = refusal is not null;
        try { if (comm.Size > 1) refused = comm.AllReduceSum(refused ? 1.0 : 0.0) > 0; }
        catch
        {
            held?.Dispose();                                                             // a failed collective must not keep the lock
            throw;
        }
        if (!refused) return new RunFolder(held);
        held?.Dispose();
        // Every rank throws the same type, so a launcher can exit without aborting the job (only rank 0 has the reason).
        throw refusal ?? new RunFolderException($"Rank 0 refused output folder '{options.OutputDir}'.");
    }

    /// <summary>
    /// Runs in-process ranks (<paramref name="ranks"/>, e.g. <see cref="InProcessWorld.RunRanks"/>) and rethrows a refused
    /// folder as itself, not as "Rank 0 of N failed: ...": it is the run's refusal, not one rank's failure.
    /// </summary>
    public static T Unwrapped<T>(Func<T> ranks)
    {
        try { return ranks(); }
        catch (InvalidOperationException e) when (e.InnerException is RunFolderException refused)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(refused);
            throw;
        }
    }

    /// <summary>True while this claim holds the lock (rank 0 until disposed).</summary>
    public bool HoldsLock => _lock is not null;

    private static FileStream Lock(string dir)
    {
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, LockFile);
        try
        {
            // FileShare.None takes flock(LOCK_EX | LOCK_NB): exclusive, released by the kernel when the process dies.
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        // Only contention for the lock (EWOULDBLOCK on Unix, a sharing violation on Windows) means another run; a read-only
        // or full disk is reported as itself.
        catch (IOException e) when (e is not (FileNotFoundException or DirectoryNotFoundException or PathTooLongException)
            && (e.HResult == 11 || (e.HResult & 0xFFFF) == 32 || e.Message.Contains("being used by another process", StringComparison.Ordinal)))
        {
            throw new RunFolderException($"Output folder '{dir}' is in use by another training run (it holds the lock {path}: {e.Message.TrimEnd('.')}); " +
                "wait for that run to end or choose another output folder (--out).", e);
        }
    }

    /// <summary>A new run: refuses another run's checkpoints or metrics, or with Overwrite deletes every output of the earlier run.</summary>
    private static void StartFresh(TrainerOptions o, Action<string>? log)
    {
        var dir = o.OutputDir;
        var present = RunOutputs.Where(n => File.Exists(Path.Combine(dir, n)) || Directory.Exists(Path.Combine(dir, n))).ToArray();
        if (o.Overwrite)
        {
            // The model folder (or the data) may be an earlier run's final/: deleting it would take the run's own input.
            var model = Path.GetFullPath(o.ModelDir) + Path.DirectorySeparatorChar;
            if (present.FirstOrDefault(n => model.StartsWith(Path.GetFullPath(Path.Combine(dir, n)) + Path.DirectorySeparatorChar, StringComparison.Ordinal)) is { } inside)
                throw new RunFolderException($"--overwrite would delete '{Path.Combine(dir, inside)}', which holds this run's model folder '{o.ModelDir}'; copy it elsewhere first or choose another output folder (--out).");
            foreach (var name in present)
            {
                var path = Path.Combine(dir, name);
                if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
                else File.Delete(path);
            }
            if (present.Length > 0) log?.Invoke($"starting over in '{dir}': deleted the earlier run's {string.Join(", ", present)}");
            return;
        }
        var checkpoints = Checkpoints.List(Path.Combine(dir, "checkpoints"));
        // A metrics.jsonl without a trained step is a run that failed at its start: retrying into it is not reusing another run.
        bool metrics = HasTrainedStep(Path.Combine(dir, MetricsFile));
        if (checkpoints.Count == 0 && !metrics) return;
        var what = checkpoints.Count > 0
            ? $"another run's checkpoints ({string.Join(", ", checkpoints.Select(Path.GetFileName))})" + (metrics ? $" and {MetricsFile}" : "")
            : $"another run's {MetricsFile} (and no checkpoint)";
        throw new RunFolderException($"Output folder '{dir}' holds {what}; " +
            (checkpoints.Count > 0 ? "continue that run with --resume latest, " : "") +
            "start over with --overwrite (deletes them), or choose another output folder (--out).");
    }

    private static bool HasTrainedStep(string metrics)
    {
        if (!File.Exists(metrics)) return false;
        foreach (var line in File.ReadLines(metrics))
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object && doc.RootElement.TryGetProperty("step", out var s)
                    && s.TryGetInt64(out var step) && step >= 1) return true;
            }
            catch (System.Text.Json.JsonException) { }
        }
        return false;
    }

    public void Dispose()
    {
        _lock?.Dispose();
        _lock = null;
    }
}

/// <summary>A run refused its output folder: another run holds it, or it holds another run's checkpoints or metrics.</summary>
public sealed class RunFolderException : IOException
{
    public RunFolderException(string message) : base(message) { }
    public RunFolderException(string message, Exception inner) : base(message, inner) { }
}
