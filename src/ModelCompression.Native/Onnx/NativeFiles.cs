using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// File-system calls .NET has no API for: hard links, copies the kernel makes without passing the bytes through user
/// memory, and advisory locks (flock) that the kernel drops when their process dies, however it dies.
/// </summary>
static partial class NativeFiles
{
    /// <summary>A second name for the same bytes; false when the file system, the platform or the permissions do not allow it.</summary>
    public static bool TryHardLink(string existing, string link)
    {
        try
        {
            return OperatingSystem.IsWindows() ? CreateHardLinkW(link, existing, IntPtr.Zero) : LinkUnix(existing, link) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>
    /// Copies up to <paramref name="length"/> bytes between two files inside the kernel (Linux copy_file_range; on
    /// file systems that share extents, no copy at all). Returns how many bytes it copied: 0 where it cannot, and the
    /// caller copies the rest itself. Copies 32 MB per call, so that cancellation is seen within a fraction of a second.
    /// </summary>
    public static long TryKernelCopy(SafeFileHandle source, long sourceOffset, SafeFileHandle target, long targetOffset, long length, CancellationToken cancel)
    {
        if (!OperatingSystem.IsLinux()) return 0;
        long done = 0;
        try
        {
            int fdIn = (int)source.DangerousGetHandle(), fdOut = (int)target.DangerousGetHandle();
            while (done < length)
            {
                cancel.ThrowIfCancellationRequested();
                long inOffset = sourceOffset + done, outOffset = targetOffset + done;
                nint n = CopyFileRange(fdIn, ref inOffset, fdOut, ref outOffset, (nuint)Math.Min(length - done, 32L << 20), 0);
                if (n <= 0) break;
                done += n;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return done;
    }

    /// <summary>What a try for a lock found.</summary>
    public enum LockResult { Taken, Held, Unsupported }

    /// <summary>
    /// Takes an exclusive lock on an open file without waiting: Held when another open file (in any process, in any PID
    /// namespace) holds one, Unsupported where the platform or file system has no such locks (Windows has sharing modes).
    /// </summary>
    public static LockResult TryLock(SafeFileHandle file) =>
        OperatingSystem.IsWindows() ? LockResult.Unsupported : TryFlock((int)file.DangerousGetHandle());

    /// <summary>
    /// An exclusive lock on a folder (Unix), waiting for whoever holds it; released when disposed or when the process
    /// dies. Null where the folder cannot be opened or locked (the caller goes on unlocked: nothing better exists there).
    /// </summary>
    public static IDisposable? LockFolder(string folder, CancellationToken cancel)
    {
        while (true)
        {
            var (result, handle) = TryLockFolder(folder);
            if (result != LockResult.Held) return handle;
            cancel.ThrowIfCancellationRequested();
            Thread.Sleep(2);
        }
    }

    /// <summary>Tries once for an exclusive lock on a folder (Unix): the lock to hold when Taken, else null.</summary>
    public static (LockResult Result, IDisposable? Lock) TryLockFolder(string folder)
    {
        if (OperatingSystem.IsWindows()) return (LockResult.Unsupported, null);
        int fd;
        try { fd = Open(folder, OperatingSystem.IsMacOS() ? 0x1000000 : 0x80000); }   // O_RDONLY | O_CLOEXEC
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return (LockResult.Unsupported, null); }
        if (fd < 0) return (LockResult.Unsupported, null);
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        var result = TryFlock(fd);
        if (result == LockResult.Taken) return (result, handle);
        handle.Dispose();
        return (result, null);
    }

    static LockResult TryFlock(int fd)
    {
        const int LockExclusive = 2, NoWait = 4;
        try
        {
            if (Flock(fd, LockExclusive | NoWait) == 0) return LockResult.Taken;
            int wouldBlock = OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD() ? 35 : 11;
            return Marshal.GetLastPInvokeError() == wouldBlock ? LockResult.Held : LockResult.Unsupported;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return LockResult.Unsupported; }
    }

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    private static partial int Flock(int fd, int operation);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LinkUnix(string existing, string link);

    [LibraryImport("libc", EntryPoint = "copy_file_range")]
    private static partial nint CopyFileRange(int fdIn, ref long offIn, int fdOut, ref long offOut, nuint length, uint flags);

    [LibraryImport("kernel32.dll", StringMarshalling = StringMarshalling.Utf16)]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static partial bool CreateHardLinkW(string link, string existing, IntPtr security);
}
