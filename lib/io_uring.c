/* io_uring file I/O for .npy streaming: being written (issue 6). */
