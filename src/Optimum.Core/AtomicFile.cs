namespace Optimum.Core;

/// <summary>Writes files so that a reader never sees a half-written one.</summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="bytes"/> to a temporary file beside <paramref name="path"/>, flushes it, then renames it over <paramref name="path"/>.</summary>
    public static void Write(string path, ReadOnlySpan<byte> bytes)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = $"{full}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";     // unique per writer, also across threads
        try
        {
            using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                f.Write(bytes);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }
}

/// <summary>Writes folders so that a failure leaves the destination as it was.</summary>
public static class AtomicFolder
{
    /// <summary>
    /// Calls <paramref name="fill"/> with a new temporary folder beside <paramref name="dir"/>; when it returns, the folder
    /// becomes <paramref name="dir"/> (renamed into place, or, when <paramref name="dir"/> exists, its files moved in over
    /// the old ones, leaving files the new folder does not have). When it throws, the temporary folder is deleted and
    /// <paramref name="dir"/> is untouched.
    /// </summary>
    public static void Write(string dir, Action<string> fill)
    {
        var full = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        if (File.Exists(full)) throw new IOException($"'{dir}' is a file; a model folder cannot be written there.");
        var parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        var tmp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(tmp);
            fill(tmp);
            if (!Directory.Exists(full)) Directory.Move(tmp, full);
            else
            {
                foreach (var f in Directory.GetFiles(tmp)) File.Move(f, Path.Combine(full, Path.GetFileName(f)), overwrite: true);
                foreach (var d in Directory.GetDirectories(tmp))
                {
                    var target = Path.Combine(full, Path.GetFileName(d));
                    if (Directory.Exists(target)) Directory.Delete(target, true);
                    Directory.Move(d, target);
                }
                Directory.Delete(tmp, true);
            }
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            throw;
        }
    }

    /// <summary>
    /// As <see cref="Write"/>, but an existing <paramref name="dir"/> is replaced whole: the filled temporary folder is
    /// swapped in by renames and the old folder deleted, so nothing of it remains. When <paramref name="fill"/> throws,
    /// <paramref name="dir"/> is untouched.
    /// </summary>
    public static void Replace(string dir, Action<string> fill)
    {
        var full = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        if (!Directory.Exists(full)) { Write(dir, fill); return; }
        var parent = Path.GetDirectoryName(full)!;
        var stem = $".{Path.GetFileName(full)}.{Environment.ProcessId}-{Guid.NewGuid():N}";
        string tmp = Path.Combine(parent, stem + ".tmp"), old = Path.Combine(parent, stem + ".old");
        try
        {
            Directory.CreateDirectory(tmp);
            fill(tmp);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            throw;
        }
        Directory.Move(full, old);
        try { Directory.Move(tmp, full); }
        catch
        {
            Directory.Move(old, full);     // put the old folder back
            Directory.Delete(tmp, true);
            throw;
        }
        Directory.Delete(old, true);
    }
}
