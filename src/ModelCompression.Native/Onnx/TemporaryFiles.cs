using System.Diagnostics;
using System.Globalization;
using Microsoft.Win32.SafeHandles;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// The process that made a temporary file: its id and its start time, so that a later process given the same id is
/// not taken for it. Written into the names of temporary files and folders ("&lt;pid&gt;-&lt;start&gt;").
/// </summary>
public readonly record struct FileOwner(int ProcessId, long StartTime)
{
    /// <summary>This process.</summary>
    public static FileOwner Current { get; } = new(Environment.ProcessId, StartTimeOf(OperatingSystem.IsLinux() ? "self" : null) ?? 0);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{ProcessId}-{StartTime}");

    /// <summary>
    /// True when no process with this id runs, or the one that does started at another time (the id was reused). A
    /// start time of 0 is unknown: the id alone decides.
    /// </summary>
    public bool IsGone => StartTimeOf(ProcessId.ToString(CultureInfo.InvariantCulture)) is not { } now || (StartTime != 0 && now != 0 && now != StartTime);

    /// <summary>Reads "&lt;pid&gt;-&lt;start&gt;" at the start of <paramref name="text"/>'s '-'-separated parts.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out FileOwner owner)
    {
        owner = default;
        int dash = text.IndexOf('-');
        if (dash <= 0) return false;
        var rest = text[(dash + 1)..];
        int end = rest.IndexOf('-');
        if (!int.TryParse(text[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ||
            !long.TryParse(end < 0 ? rest : rest[..end], NumberStyles.None, CultureInfo.InvariantCulture, out long start)) return false;
        owner = new FileOwner(pid, start);
        return true;
    }

    /// <summary>
    /// When process <paramref name="pid"/> started, in the platform's own unit (Linux: clock ticks since boot, exact;
    /// elsewhere .NET's start time); null when no such process runs (a zombie counts as gone), 0 when it runs but its
    /// start time cannot be read.
    /// </summary>
    static long? StartTimeOf(string? pid)
    {
        if (OperatingSystem.IsLinux() && pid is not null)
        {
            string stat;
            try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
            // "pid (name) state ppid ... starttime": the name may hold spaces and parentheses, so count from the last ')'.
            var fields = stat[(stat.LastIndexOf(')') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 20) return 0;
            if (fields[0] is "Z" or "X" or "x") return null;
            return long.TryParse(fields[19], NumberStyles.None, CultureInfo.InvariantCulture, out long ticks) ? ticks : 0;
        }
        try
        {
            using var p = pid is null ? Process.GetCurrentProcess() : Process.GetProcessById(int.Parse(pid, CultureInfo.InvariantCulture));
            return p.HasExited ? null : p.StartTime.ToUniversalTime().Ticks;
        }
        catch (ArgumentException) { return null; }
        catch (InvalidOperationException) { return null; }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or NotSupportedException) { return 0; }
    }
}

/// <summary>
/// Temporary files and folders that a killed run would leave behind carry their owner in their names and are locked by
/// it while it lives (<see cref="NativeFiles.TryLock"/>, <see cref="NativeFiles.TryLockFolder"/>); the next run that
/// could have made them removes those whose owner is gone and which nobody holds. Beside an export's target:
/// ".&lt;file&gt;.mc-&lt;pid&gt;-&lt;start&gt;-&lt;random&gt;.tmp".
/// </summary>
public static class TemporaryFiles
{
    const string Marker = ".mc-", Suffix = ".tmp";

    /// <summary>A new temporary name beside <paramref name="target"/>, owned by this process.</summary>
    public static string Beside(string target) =>
        Path.Combine(Path.GetDirectoryName(target)!, Name(Path.GetFileName(target), FileOwner.Current, Guid.NewGuid().ToString("N")[..8]));

    internal static string Name(string fileName, FileOwner owner, string random) => $".{fileName}{Marker}{owner}-{random}{Suffix}";

    /// <summary>The owner a temporary file's name gives; false for names this engine did not make.</summary>
    public static bool TryGetOwner(string fileName, out FileOwner owner)
    {
        owner = default;
        int marker = fileName.LastIndexOf(Marker, StringComparison.Ordinal);
        return fileName.StartsWith('.') && fileName.EndsWith(Suffix, StringComparison.Ordinal) && marker > 0 &&
               TryParse(fileName.AsSpan(marker + Marker.Length, fileName.Length - marker - Marker.Length - Suffix.Length), out owner);
    }

    static bool TryParse(ReadOnlySpan<char> ownerAndRandom, out FileOwner owner) =>
        FileOwner.TryParse(ownerAndRandom, out owner) && ownerAndRandom.Count('-') == 2;

    /// <summary>Creates <paramref name="path"/> (a name from <see cref="Beside"/>) and holds it locked until the stream is closed.</summary>
    public static FileStream Create(string path)
    {
        // Delete shared: Windows renames an open file only when every handle allows it.
        var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Delete, 1 << 20);
        NativeFiles.TryLock(stream.SafeFileHandle);
        return stream;
    }

    /// <summary>Removes the temporary files and folders in <paramref name="folder"/> whose owners are gone; returns how many.</summary>
    public static int RemoveStale(string folder)
    {
        int removed = 0;
        try
        {
            foreach (var path in Directory.EnumerateFileSystemEntries(folder, "." + "*" + Marker + "*" + Suffix))
                if (TryGetOwner(Path.GetFileName(path), out var owner) && owner.IsGone && TryRemove(path)) removed++;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return removed;
    }

    /// <summary>
    /// Removes a file or folder whose owner is gone by its name, unless a live process holds its lock (a process in
    /// another PID namespace can carry an id that means another process here, or none).
    /// </summary>
    internal static bool TryRemove(string path)
    {
        IDisposable? held = null;
        try
        {
            // A link is removed, never followed.
            bool link = new FileInfo(path).LinkTarget is not null, folder = !link && Directory.Exists(path);
            if (folder)
            {
                (var result, held) = NativeFiles.TryLockFolder(path);
                if (result == NativeFiles.LockResult.Held) return false;
                Directory.Delete(path, recursive: true);
                return true;
            }
            if (!link && !OperatingSystem.IsWindows())
            {
                // Read-write: opening does not block on a FIFO.
                var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
                held = handle;
                if (NativeFiles.TryLock(handle) == NativeFiles.LockResult.Held) return false;
            }
            File.Delete(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
        finally { held?.Dispose(); }
    }
}

/// <summary>
/// The folder of this process's scratch files and of the temporary folders ONNX Runtime writes to, in the temporary
/// folder (TMPDIR): "mc-scratch-&lt;pid&gt;-&lt;start&gt;-&lt;random&gt;", locked while the process lives, removed at exit. Folders
/// of processes that are gone are removed when the next process makes its own.
/// </summary>
public static class ScratchFolder
{
    internal const string Prefix = "mc-scratch-";

    /// <summary>The folder, made on first use.</summary>
    public static string Path
    {
        get
        {
            try { lock (gate) return folder ??= Create(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new EngineException("ScratchWriteFailed", EngineErrorKind.WriteError,
                    $"Could not make a scratch folder in '{System.IO.Path.GetTempPath()}' (the temporary folder; set TMPDIR to a folder with more room): {e.Message}", e);
            }
        }
    }

    /// <summary>A new folder inside the scratch folder (for ONNX Runtime's files): gone with it if this process is killed.</summary>
    public static string CreateSubdirectory(string prefix) =>
        Directory.CreateDirectory(System.IO.Path.Combine(Path, prefix + Guid.NewGuid().ToString("N")[..12])).FullName;

    internal static string Name(FileOwner owner, string random) => $"{Prefix}{owner}-{random}";

    /// <summary>
    /// The owner a scratch folder's name gives; folders of older versions ("mc-scratch-&lt;pid&gt;-&lt;random&gt;") give their
    /// id alone (start time 0).
    /// </summary>
    public static bool TryGetOwner(string name, out FileOwner owner)
    {
        owner = default;
        if (!name.StartsWith(Prefix, StringComparison.Ordinal)) return false;
        var rest = name.AsSpan(Prefix.Length);
        if (rest.Count('-') == 2 && FileOwner.TryParse(rest, out owner)) return true;
        int dash = rest.IndexOf('-');
        if (dash <= 0 || !int.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)) return false;
        owner = new FileOwner(pid, 0);
        return true;
    }

    /// <summary>Removes the scratch folders under <paramref name="root"/> whose owners are gone; returns how many.</summary>
    public static int RemoveStale(string root)
    {
        int removed = 0;
        try
        {
            foreach (var dir in Directory.EnumerateDirectories(root, Prefix + "*"))
                if (TryGetOwner(System.IO.Path.GetFileName(dir), out var owner) && owner != FileOwner.Current && owner.IsGone &&
                    TemporaryFiles.TryRemove(dir)) removed++;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return removed;
    }

    static readonly object gate = new();
    static string? folder;
    /// <summary>The folder's lock, held for the life of the process.</summary>
    static IDisposable? ownerLock;

    /// <summary>Made once per process; a failure (no room, no such folder) is not kept, so the next stage tries again.</summary>
    static string Create()
    {
        string root = System.IO.Path.GetTempPath();
        RemoveStale(root);
        var dir = Directory.CreateDirectory(System.IO.Path.Combine(root, Name(FileOwner.Current, Guid.NewGuid().ToString("N")[..12])));
        ownerLock = NativeFiles.TryLockFolder(dir.FullName).Lock;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            ownerLock?.Dispose();
            try { dir.Delete(recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return dir.FullName;
    }
}
